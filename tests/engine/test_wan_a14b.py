"""Wan2.2 A14B (two experts) against diffusers 0.42's ``WanPipeline`` with ``transformer_2`` + ``boundary_ratio``.

The folder is made by diffusers itself: the built-in tiny model's components plus a second tiny
``WanTransformer3DModel`` with other random weights, ``boundary_ratio`` between the 2nd and 3rd of 4 timesteps,
written by ``save_pretrained``. Ours loads it through our loader and runs the engine core's executor; fp32 frames
must agree within 1e-4 with ``guidance_scale != guidance_scale_2``. Also: the switch happens at the right step
(forwards counted per expert), a batch whose members sit on different experts runs one forward per expert, and
the refusals (the two-expert fields on a one-expert model; a folder with ``transformer_2`` but no ratio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core_testing import core_latents
from fastvideo.api import GenerationRequest, RequestError, SamplingConfig
from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.models.wan.experts import ExpertSet, expert_index
from fastvideo.engine.families import match_family
from fastvideo.engine.presets import get_preset

diffusers = pytest.importorskip("diffusers")

FRAME_TOLERANCE = 1e-4
STEPS = 4
PROMPT, NEGATIVE, SEED = "a red fox running through snow", "blurry, low quality", 1234


@pytest.fixture(scope="module")
def a14b(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, Any]:
    """(folder, boundary_ratio, the diffusers pipeline that wrote it)."""
    base = diffusers.WanPipeline.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32)
    second = diffusers.WanTransformer3DModel(**dict(base.transformer.config)).eval()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in second.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    scheduler = base.scheduler
    scheduler.set_timesteps(STEPS)
    ts = [float(t) for t in scheduler.timesteps]
    ratio = (ts[1] + ts[2]) / 2 / scheduler.config.num_train_timesteps  # steps 0, 1: transformer; 2, 3: transformer_2
    pipe = diffusers.WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                 scheduler=base.scheduler, transformer=base.transformer, transformer_2=second,
                                 boundary_ratio=ratio)
    folder = tmp_path_factory.mktemp("a14b") / "tiny-a14b"
    pipe.save_pretrained(str(folder))
    return folder, ratio, pipe


@pytest.fixture(scope="module")
def ours(a14b: tuple[Path, float, Any]) -> Any:
    from fastvideo import VideoGenerator

    generator = VideoGenerator.from_pretrained(str(a14b[0]), device="cpu", dtype="fp32")
    yield generator
    generator.shutdown()


def _request(**sampling: Any) -> GenerationRequest:
    values = dict(width=48, height=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=5.0, seed=SEED)
    return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, sampling=SamplingConfig(**{**values, **sampling}))


def test_family_and_experts_loaded(ours: Any, a14b: tuple[Path, float, Any]) -> None:
    pipe = ours.pipeline
    assert pipe.family.name == "wan2.2-t2v-a14b"
    assert pipe.dit_2 is not None and pipe.preset.boundary_ratio == pytest.approx(a14b[1])
    first = dict(pipe.dit.named_parameters())
    diff = max((p - first[n]).abs().max().item() for n, p in pipe.dit_2.named_parameters())
    assert diff > 1e-2  # two different experts


def test_two_experts_match_diffusers(ours: Any, a14b: tuple[Path, float, Any]) -> None:
    before = ours.counters.snapshot()
    latents, _ = core_latents(ours, _request(guidance_scale_2=2.0))
    after = ours.counters.snapshot()
    # CFG batched: one forward per step; steps 0-1 on transformer, 2-3 on transformer_2.
    assert after["expert_0_forwards"] - before["expert_0_forwards"] == 2
    assert after["expert_1_forwards"] - before["expert_1_forwards"] == 2
    pipe = ours.pipeline
    with torch.no_grad():
        video = pipe.vae.decode(pipe.vae.denormalize_latents(latents))[0]
    mine = (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    reference = a14b[2]

    def theirs(guidance_2: float) -> np.ndarray:
        return reference(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=48, num_frames=5,
                         num_inference_steps=STEPS, guidance_scale=5.0, guidance_scale_2=guidance_2,
                         output_type="np", generator=torch.Generator("cpu").manual_seed(SEED),
                         max_sequence_length=get_preset("fastvideo-tiny").text_length).frames[0]

    want = theirs(2.0)
    assert mine.shape == want.shape and float(mine.std()) > 1e-3
    err = float(np.abs(mine - want).max())
    assert err <= FRAME_TOLERANCE, f"max abs frame error {err:.2e} > {FRAME_TOLERANCE}"
    # guidance_scale_2 matters: the reference with another value is far from ours.
    assert float(np.abs(mine - theirs(5.0)).max()) > 10 * FRAME_TOLERANCE


def test_metadata_reports_the_experts_settings(ours: Any, a14b: tuple[Path, float, Any]) -> None:
    result = ours.generate(_request(num_inference_steps=1, guidance_scale_2=2.5))
    assert result.metadata["boundary_ratio"] == pytest.approx(a14b[1])
    assert result.metadata["guidance_scale_2"] == 2.5


def test_request_boundary_ratio_moves_the_switch(ours: Any) -> None:
    before = ours.counters.snapshot()
    core_latents(ours, _request(boundary_ratio=1.0))  # t >= 1000 never holds after the first step
    after = ours.counters.snapshot()
    sampler = ours.pipeline.make_sampler(ours.resolve(_request())[1])
    high = sum(1 for t in sampler.state.schedule.timesteps_host[:STEPS] if t >= 1000)
    assert after["expert_0_forwards"] - before["expert_0_forwards"] == high
    assert after["expert_1_forwards"] - before["expert_1_forwards"] == STEPS - high


def test_batch_never_mixes_experts(ours: Any) -> None:
    """Two requests in one batch on different experts at the same step: one forward per expert per step, and
    each member equals its solo run."""
    from fastvideo.runtime.executor import WanBatchExecutor

    executor = WanBatchExecutor(ours)
    items = []
    for ratio in (None, 1.0):
        req, resolved = ours.resolve(_request(boundary_ratio=ratio, guidance_scale_2=3.0))
        item = executor.make_item(req, resolved)
        executor.prepare(item)
        items.append(item)
    seen: list[int] = []
    original = executor._step

    def step(latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        seen.append(id(executor._dit))
        return original(latents, timestep, embeds)

    executor._step = step  # type: ignore[method-assign]
    assert executor.denoise(items, lambda *_: None) == []
    pipe = ours.pipeline
    ids = (id(pipe.dit), id(pipe.dit_2))
    timesteps = pipe.make_sampler(items[0].payload.resolved).state.schedule.timesteps_host[:STEPS]
    ratios = [item.payload.resolved.boundary_ratio for item in items]
    want = [ids[k] for t in timesteps for k in sorted({expert_index(t, r, 1000) for r in ratios})]
    assert seen == want
    assert len(want) > STEPS  # some step split the batch: one forward per expert, never a mixed one
    for item, ratio in zip(items, (None, 1.0)):
        solo, _ = core_latents(ours, _request(boundary_ratio=ratio, guidance_scale_2=3.0))
        assert (item.ctx.latents - solo).abs().max().item() <= 1e-4


def test_expert_index_rule() -> None:
    assert expert_index(999.0, 0.875, 1000) == 0
    assert expert_index(875.0, 0.875, 1000) == 0  # diffusers: t >= boundary runs transformer
    assert expert_index(874.9, 0.875, 1000) == 1
    assert expert_index(1.0, None, 1000) == 0


def test_expert_set_offload_keeps_one_resident() -> None:
    """With offload, activate() moves the wanted expert in and the other out (CPU stands in for the device)."""
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    experts = ExpertSet([a, b], torch.device("cpu"), offload=True, pin_memory=False)
    assert experts.activate(0) is a and experts.activate(0) is a
    assert experts.offloaders[0].moves_to_device == 1 and experts.offloaders[1].moves_to_device == 0
    assert experts.activate(1) is b
    assert experts.offloaders[0].moves_to_cpu == 1 and experts.offloaders[1].moves_to_device == 1
    assert experts.switches == 1
    experts.release()
    assert experts.offloaders[1].moves_to_cpu == 1


def test_one_expert_model_refuses_expert_fields(tiny_generator: Any) -> None:
    for field, value in (("guidance_scale_2", 2.0), ("boundary_ratio", 0.5)):
        with pytest.raises(RequestError) as err:
            tiny_generator.resolve(_request(**{field: value}))
        assert err.value.field == f"sampling.{field}"


def test_bad_boundary_ratio_refused(ours: Any) -> None:
    with pytest.raises(RequestError) as err:
        ours.resolve(_request(boundary_ratio=1.5))
    assert err.value.field == "sampling.boundary_ratio"


def test_folder_with_second_expert_needs_a_ratio() -> None:
    index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": None}
    with pytest.raises(ModelLoadError, match="boundary_ratio"):
        match_family(index, {})
    assert match_family({**index, "boundary_ratio": 0.875}, {}).name == "wan2.2-t2v-a14b"
    # A ratio without a second expert is no A14B folder either (and Wan2.1 refuses the ratio).
    with pytest.raises(ModelLoadError, match="transformer_2"):
        match_family({**index, "transformer_2": [None, None], "boundary_ratio": 0.875}, {})
    assert match_family({**index, "transformer_2": [None, None]}, {}).name == "wan2.1-t2v"


@pytest.mark.parametrize("two_experts,data,field", [
    (False, {"engine": {"offload": {"dit": True}}}, "engine.offload.dit"),
    (True, {"pipeline": {"components": {"lora_path": "/l.safetensors"}}}, "pipeline.components.lora_path"),
    (True, {"engine": {"artifacts_path": "/a", "offload": {"dit": True}}}, "engine.artifacts_path"),
])
def test_model_dependent_refusals(two_experts: bool, data: dict, field: str) -> None:
    from fastvideo.api import ConfigError, GeneratorConfig, parse_config
    from fastvideo.runtime.config_support import check_model_config

    with pytest.raises(ConfigError) as err:
        check_model_config(parse_config(GeneratorConfig, data), device_type="cuda", two_experts=two_experts)
    assert err.value.path == field


def test_expert_offload_is_honoured_on_two_expert_models() -> None:
    """engine.offload.dit on a CUDA device: one expert resident at a time for A14B (not refused)."""
    from fastvideo.api import GeneratorConfig, parse_config
    from fastvideo.engine.families import declares_two_experts
    from fastvideo.runtime.config_support import check_generator_config, check_model_config

    config = parse_config(GeneratorConfig, {"engine": {"offload": {"dit": True}}})
    check_generator_config(config, device_type="cuda")
    check_model_config(config, device_type="cuda", two_experts=True)
    assert declares_two_experts({"transformer_2": ["diffusers", "WanTransformer3DModel"]})
    assert not declares_two_experts({"transformer_2": [None, None]}) and not declares_two_experts({})


def test_a14b_preset() -> None:
    """FastVideo's Wan2_2_T2V_A14B defaults (40 steps, guidance 4.0 / 3.0, shift 12); picked for a 5120-wide
    folder that sets boundary_ratio."""
    from fastvideo.api.presets import infer_preset_for_folder

    preset = get_preset("wan_t2v_a14b")
    assert (preset.num_inference_steps, preset.guidance_scale, preset.guidance_scale_2, preset.shift) == \
        (40, 4.0, 3.0, 12.0)
    big = {"num_attention_heads": 40, "attention_head_dim": 128, "num_layers": 40}
    assert infer_preset_for_folder({"boundary_ratio": 0.875}, big).name == "wan_t2v_a14b"
    assert infer_preset_for_folder({}, big).name == "wan_t2v_14b"


def test_switch_benchmark_runs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/bench_expert_switch.py (the switch-cost figure) runs on the CPU and reports the bytes moved."""
    import importlib.util
    import json
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_expert_switch.py"
    spec = importlib.util.spec_from_file_location("bench_expert_switch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["bench", "--config", "tiny", "--iters", "2"])
    module.main()
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["expert_bytes_built"] > 0 and report["switch_s_median"] >= 0


def test_runtime_lora_is_refused_on_two_experts(ours: Any, tmp_path: Path) -> None:
    """set_lora_adapter would merge into the first expert only: refused by name, weights untouched."""
    from fastvideo.api import ConfigError

    before = {k: v.clone() for k, v in ours.pipeline.dit.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        ours.set_lora_adapter("style", str(tmp_path / "style.safetensors"))
    assert "two-expert" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in ours.pipeline.dit.state_dict().items())


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_two_expert_artifacts_accepted_without_expert_offload(device_type: str) -> None:
    from fastvideo.api import GeneratorConfig, parse_config
    from fastvideo.runtime.config_support import check_model_config

    # fastvideo-build exports both experts into one folder; only the expert swap (offload.dit) conflicts with it.
    check_model_config(parse_config(GeneratorConfig, {"engine": {"artifacts_path": "/a"}}),
                       device_type=device_type, two_experts=True)
