"""Which ``GenerationRequest`` fields the engine honours, and the refusal of every value it cannot.

Contract:
- :data:`REQUEST_FIELD_SUPPORT` lists every leaf field of :class:`~fastvideo.api.GenerationRequest` by its
  dotted path (``sampling.sigmas``) with how it is honoured or when it is refused. A test keeps it
  complete, so a new request field cannot land without being classified.
- :func:`check_request_fields(request, model_name, workload)` runs first in
  :func:`fastvideo.engine.validation.resolve_sampling` (so for every request, whatever edge it came
  from). For a value the engine cannot honour it raises :class:`~fastvideo.api.RequestError` whose
  ``field`` is the dotted path and whose message says it is not supported yet and what to do instead.
  No value is ignored silently. FastVideo's defaults always pass. ``runtime.enable_teacache`` is honoured, with
  ``runtime.teacache_thresh`` checked (finite, >= 0) when it is on. Image inputs (``inputs.image_path`` or
  ``inputs.pil_image``, and ``inputs.last_image``) follow the model's workload: required by image-to-video
  models (the last image by first-last-frame ones only), optional for text-image-to-video ones (workload
  ``ti2v``, Wan2.2 TI2V-5B: first frame only), refused by text-to-video ones, naming the field.
  ``sampling.guidance_scale_2`` / ``sampling.boundary_ratio`` pass only with ``two_experts`` (Wan2.2 A14B).
- LTX-2 (video + audio): :func:`check_ltx2_request_fields` runs before :func:`check_request_fields` for that
  family (``LTX2BatchExecutor.resolve_sampling``) and refuses, naming the field, what the Wan-shaped request
  holds that LTX-2 cannot honour yet (:data:`LTX2_REFUSED_FIELDS`): ``sampling.continuation_strength`` (an LTX-2
  state carries its own conditioning strengths; ``state`` and ``output.return_state`` are honoured),
  ``inputs.last_image`` (LTX-2 image-to-video conditions on the first frame only), ``sampling.shift`` (LTX-2's
  schedule is the scheduler config's dynamic shift), samplers other than Euler, DMD timesteps, TeaCache, previews and
  ``sampling.max_sequence_length`` (the preset's text length). The first-frame image (``inputs.image_path`` or
  ``inputs.pil_image``: optional, image-to-video) is checked here: given once, one image, and not together with a
  continuation ``state`` (each a RequestError naming the field); the runtime then takes it out of the request
  before the common checks (which would refuse it for a text-to-video workload).
- Stdlib only (the request and its values, no model).
"""

from __future__ import annotations

import math
from typing import Any

from fastvideo.api.errors import RequestError
from fastvideo.api.request import GenerationRequest, InputConfig

#: Runtime switches refused when true (TeaCache's fields are honoured, see check_request_fields).
_TRAJECTORY_FIELDS = ("return_trajectory_latents", "return_trajectory_decoded")
_T2V = "this engine runs text-to-video from the prompt alone"
_HOW = "honoured (the engine validates and uses it; see fastvideo.engine.validation)"

#: Dotted path -> how the field is honoured, or when it is refused (see module contract).
REQUEST_FIELD_SUPPORT: dict[str, str] = {
    "prompt": "a non-empty string honoured; a list is fanned out by VideoGenerator.generate (one result per "
              "prompt) and refused when it reaches the engine whole (send one request per prompt); None refused",
    "negative_prompt": "honoured (None: the preset's)",
    "request_id": "honoured (file names, logs, events)",
    "state.kind": "honoured (continuation state)",
    "state.payload": "honoured (continuation state)",
    **{f"inputs.{name}": f"None honoured; a value refused (not supported yet: {_T2V})"
       for name in InputConfig.__dataclass_fields__},
    "inputs.image_path": "image-to-video models: one image file path, required (or inputs.pil_image in Python); "
                         "a list refused (one request per image); text-image-to-video models (ti2v): optional "
                         "(the first frame); LTX-2: optional (image-to-video); text-to-video models: refused",
    "inputs.pil_image": "image-to-video models: a PIL image, instead of inputs.image_path; text-to-video: refused",
    "inputs.last_image": "first-last-frame models (flf2v): the last frame (a path or a PIL image), required; "
                         "others: refused",
    "inputs.prompt_path": "read by VideoGenerator.generate (one result per line); refused when it reaches the "
                          "engine (a server or an executor)",
    **{f"sampling.{name}": _HOW for name in ("width", "height", "num_frames", "fps", "num_inference_steps",
                                             "guidance_scale", "seed", "shift", "sampler", "continuation_strength",
                                             "dmd_denoising_steps")},
    "sampling.true_cfg_scale": "None and 1.0 honoured; others refused (Wan uses classic CFG: guidance_scale)",
    "sampling.num_videos_per_prompt": "1 honoured; others refused (not supported yet: send one request per video, "
                                      "with different seeds)",
    "sampling.max_sequence_length": "None honoured (the text encoder's 512 tokens) and 512; others refused",
    "sampling.height_sr": "1072 (FastVideo's default) honoured; others refused (no super-resolution stage)",
    "sampling.width_sr": "1920 (FastVideo's default) honoured; others refused (no super-resolution stage)",
    "sampling.num_inference_steps_sr": "50 (FastVideo's default) honoured; others refused (no super-resolution "
                                       "stage)",
    "sampling.batch_cfg": "accepted either way: it only changes how the two CFG passes are scheduled, not the video",
    "sampling.guidance_scale_2": "honoured on two-expert models (Wan2.2 A14B: transformer_2's guidance); a value "
                                 "refused on single-expert models",
    "sampling.boundary_ratio": "honoured on two-expert models (the expert switch point, in (0, 1]); a value refused "
                               "on single-expert models",
    "sampling.cfg_normalization": "false honoured; true refused (not supported yet)",
    "sampling.cfg_truncation": "None and 1.0 (off) honoured; others refused (not supported yet)",
    "sampling.guidance_rescale": "0.0 (off) honoured; others refused (not supported yet)",
    "sampling.use_embedded_guidance": "None and false honoured; true refused (Wan has no embedded guidance)",
    "sampling.sigmas": "None honoured; a list refused (not supported yet: use sampling.shift and sampling.sampler)",
    "runtime.enable_teacache": "honoured: TeaCache step caching (fastvideo.engine.step_cache), with or without "
                               "CUDA graphs; refused by the executor with CUDA graphs and engine.compile together",
    "runtime.teacache_thresh": "honoured with runtime.enable_teacache (a finite number >= 0; 0 never skips)",
    "runtime.teacache_use_ret_steps": "honoured with runtime.enable_teacache",
    "runtime.teacache_coefficients": "honoured with runtime.enable_teacache (None: Wan2.1-T2V-1.3B's polynomial; a "
                                     "non-empty list of finite numbers, highest power first)",
    **{f"runtime.{name}": "false honoured; true refused (not supported yet)"
       for name in _TRAJECTORY_FIELDS},
    "output.save_video": "honoured",
    "output.return_frames": "honoured",
    "output.output_path": "honoured (None: outputs/)",
    "output.return_state": "honoured",
    "output.preview_interval_steps": "honoured (generate_async previews)",
    "output.output_video_name": "None honoured; a name refused (not supported yet: put the file name in "
                                "output.output_path)",
    "stage_overrides": "empty honoured; any stage refused (not supported yet: set the sampling fields instead)",
    **{f"plan.stages.{name}": "no plan honoured; a plan refused (not supported yet)"
       for name in ("name", "kind", "source", "overrides")},
    "plan.final_stage": "no plan honoured; a plan refused (not supported yet)",
    "extensions": "'lora' honoured by VideoGenerator.resolve (must name the merged LoRA adapter, see "
                  "runtime/lora_adapters.py; dropped before this check); any other key refused (not supported yet)",
}

#: Sampling fields honoured only at these values: name -> (accepted values, why / what to do instead).
_SAMPLING_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "num_videos_per_prompt": ((1,), "several videos per request are not supported yet; send one request per video "
                                    "(with different seeds)"),
    "max_sequence_length": ((None, 512), "the text encoder reads 512 tokens; drop it"),
    "height_sr": ((1072,), "this engine has no super-resolution stage; drop it"),
    "width_sr": ((1920,), "this engine has no super-resolution stage; drop it"),
    "num_inference_steps_sr": ((50,), "this engine has no super-resolution stage; drop it"),
    "cfg_normalization": ((False,), "CFG normalization is not supported yet; set it to false"),
    "cfg_truncation": ((None, 1.0), "CFG truncation is not supported yet; set it to 1.0 or null"),
    "guidance_rescale": ((0.0,), "guidance rescale is not supported yet; set it to 0"),
    "use_embedded_guidance": ((None, False), "Wan models have no embedded guidance; set it to false or null"),
    "sigmas": ((None,), "custom sigma schedules are not supported yet; use sampling.shift and sampling.sampler"),
}


#: Input fields checked by :func:`_check_images` (honoured by image-to-video models).
_IMAGE_FIELDS = ("image_path", "pil_image", "last_image")


def _same(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(value is a if a is None or isinstance(a, bool) or isinstance(value, bool) else value == a
               for a in allowed)


def _check_images(inputs: InputConfig, model_name: str, workload: str) -> None:
    """Image inputs: required by image-to-video models (``workload`` "i2v" / "flf2v"), refused by the others."""
    image = inputs.image_path if inputs.image_path is not None else inputs.pil_image
    if workload == "t2v":
        for name in ("image_path", "pil_image", "last_image"):
            if getattr(inputs, name) is not None:
                raise RequestError(f"inputs.{name}", f"model {model_name!r} is text-to-video and takes no image; "
                                                     "drop it, or load an image-to-video model (e.g. a "
                                                     "Wan2.1-I2V folder)")
        return
    if workload == "ti2v" and inputs.last_image is not None:
        raise RequestError("inputs.last_image", f"model {model_name!r} (text-image-to-video) conditions on the first "
                                                "frame only; drop it")
    if inputs.image_path is not None and inputs.pil_image is not None:
        raise RequestError("inputs.pil_image", "give the image once: inputs.image_path or inputs.pil_image")
    if image is None and workload == "ti2v":
        return  # no image: text-to-video
    if image is None:
        raise RequestError("inputs.image_path", f"model {model_name!r} is an image-to-video model: set "
                                                "inputs.image_path to the first frame's image file")
    if isinstance(inputs.image_path, list):
        raise RequestError("inputs.image_path", "one image per request: send one request per image")
    if workload == "flf2v" and inputs.last_image is None:
        raise RequestError("inputs.last_image", f"model {model_name!r} is a first-last-frame model: set "
                                                "inputs.last_image to the last frame's image")
    if workload == "i2v" and inputs.last_image is not None:
        raise RequestError("inputs.last_image", f"model {model_name!r} conditions on the first frame only (a "
                                                "first-last-frame model has pos_embed_seq_len); drop it")


def check_request_fields(request: GenerationRequest, model_name: str, workload: str = "t2v", *,
                         two_experts: bool = False) -> None:
    """Refuse, with a RequestError naming the field, the first request value this engine cannot honour
    (``workload``: the model's, see :attr:`fastvideo.engine.presets.ModelPreset.workload`)."""
    prompt = request.prompt
    if isinstance(prompt, list):
        raise RequestError("prompt", f"a list of {len(prompt)} prompts cannot run as one request here; send one "
                                     "request per prompt")
    inputs = request.inputs
    _check_images(inputs, model_name, workload)
    if workload != "t2v" and request.state is not None:
        raise RequestError("state", "continuing a video is not supported for image-to-video models yet; drop it")
    for name in InputConfig.__dataclass_fields__:
        if name in _IMAGE_FIELDS:
            continue
        if getattr(inputs, name) is not None:
            raise RequestError(f"inputs.{name}", f"is not supported yet: {_T2V} (model {model_name!r}); drop it")
    s = request.sampling
    for name in ("guidance_scale_2", "boundary_ratio"):
        if getattr(s, name) is not None and not two_experts:
            raise RequestError(f"sampling.{name}", f"{getattr(s, name)!r} is not supported: model {model_name!r} "
                                                   "has one expert (it applies to two-expert models such as Wan "
                                                   "2.2 A14B); drop it")
    for name, (allowed, why) in _SAMPLING_ONLY.items():
        value = getattr(s, name)
        if not _same(value, allowed):
            raise RequestError(f"sampling.{name}", f"{value!r} is not supported: {why}")
    for name in _TRAJECTORY_FIELDS:
        if getattr(request.runtime, name):
            raise RequestError(f"runtime.{name}", "true is not supported yet; set it to false")
    if request.runtime.enable_teacache:
        thresh = request.runtime.teacache_thresh
        if isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0.0 <= thresh < float("inf"):
            raise RequestError("runtime.teacache_thresh", f"{thresh!r} is not a finite number >= 0; use e.g. 0.08 "
                                                          "(0 never skips a step; higher skips more)")
        coefficients = request.runtime.teacache_coefficients
        if coefficients is not None and (not isinstance(coefficients, list) or not coefficients or not all(
                not isinstance(c, bool) and isinstance(c, (int, float)) and math.isfinite(c) for c in coefficients)):
            raise RequestError("runtime.teacache_coefficients", f"{coefficients!r} is not a non-empty list of finite "
                                                                "numbers (highest power first, e.g. [1.0, 0.0]); or "
                                                                "null for Wan2.1-T2V-1.3B's")
    if request.output.output_video_name is not None:
        raise RequestError("output.output_video_name", "is not supported yet: put the file name in "
                                                       "output.output_path (e.g. outputs/fox.mp4)")
    if request.stage_overrides:
        stage = sorted(request.stage_overrides)[0]
        raise RequestError(f"stage_overrides.{stage}", "stage overrides are not supported yet; set the request's "
                                                       "sampling fields instead (e.g. sampling.num_inference_steps)")
    if request.plan is not None:
        raise RequestError("plan", "explicit generation plans are not supported yet; drop it")
    if request.extensions:
        key = sorted(request.extensions)[0]
        raise RequestError(f"extensions.{key}", "extension keys are not supported yet; use the typed request "
                                                "fields, or drop it")


_LTX2_LATER = "is not supported for LTX-2 yet"

#: Request fields LTX-2 refuses when set (dotted path -> why / what to do instead); see module contract.
LTX2_REFUSED_FIELDS: dict[str, str] = {
    "sampling.continuation_strength": "an LTX-2 continuation state carries its own conditioning strengths "
                                      "(video_conditioning_strength, audio_conditioning_strength); drop it",
    "inputs.last_image": "LTX-2 image-to-video conditions on the first frame only (inputs.image_path); drop it",
    "sampling.shift": "LTX-2's schedule uses its scheduler config's dynamic shift; drop it",
    "sampling.dmd_denoising_steps": "DMD sampling is for FastWan checkpoints; LTX-2 samples with Euler: drop it",
    "sampling.max_sequence_length": "LTX-2's text encoder reads the preset's text length; drop it",
    "runtime.enable_teacache": f"TeaCache {_LTX2_LATER}; set it to false",
    "output.preview_interval_steps": f"previews {_LTX2_LATER}; drop it",
}


def check_ltx2_request_fields(request: GenerationRequest, model_name: str) -> None:
    """Refuse, with a RequestError naming the field, a request value an LTX-2 model cannot honour (module
    contract); the common fields are then checked by :func:`check_request_fields`."""
    for path, why in LTX2_REFUSED_FIELDS.items():
        value: Any = request
        for part in path.split("."):
            value = getattr(value, part)
        if value is not None and value is not False:
            raise RequestError(path, f"{value!r:.80} is not supported by model {model_name!r}: {why}")
    inputs = request.inputs
    if inputs.image_path is not None and inputs.pil_image is not None:
        raise RequestError("inputs.pil_image", "give the image once: inputs.image_path or inputs.pil_image")
    if isinstance(inputs.image_path, list):
        raise RequestError("inputs.image_path", "one image per request: send one request per image")
    if (inputs.image_path is not None or inputs.pil_image is not None) and request.state is not None:
        field = "inputs.image_path" if inputs.image_path is not None else "inputs.pil_image"
        raise RequestError(field, f"model {model_name!r}: a request either starts from an image or continues a "
                                  "state, not both; drop the image or the state")
    sampler = request.sampling.sampler
    if sampler not in (None, "euler"):
        raise RequestError("sampling.sampler", f"{sampler!r} is not supported by model {model_name!r}: LTX-2 samples "
                                               "with the flow-matching Euler sampler; use 'euler' or drop it")
