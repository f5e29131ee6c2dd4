"""``clip.clip_score``: text-video agreement with a CLIP model loaded from a local folder (never downloaded).

Contract: the metric needs ``EvalOptions.clip_model`` (CLI ``--clip-model /path``): a folder that
transformers' ``CLIPModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load (``config.json``,
weights, tokenizer files), e.g. a local copy of ``openai/clip-vit-base-patch32``; without it the metric
refuses with how to enable it. Each video needs a prompt. Frames are preprocessed as CLIP's image
processor does -- resize the short side to ``size.shortest_edge`` (bicubic, antialiased, in torch), center
crop to ``crop_size``, normalise with ``image_mean`` / ``image_std`` -- reading those values from the
folder's ``preprocessor_config.json`` when present, else CLIP's defaults at the vision tower's
``image_size``; results may differ slightly from the PIL-based processor. Score = the mean over frames of
``100 * max(cos(image embedding, text embedding), 0)`` (torchmetrics' CLIPScore convention); per-frame
values in ``details["per_frame"]``. A folder that cannot be loaded -- no ``config.json``, a config that is
not CLIP's, weights that miss tensors (never scored with random ones), no tokenizer -- raises
:class:`~fastvideo.api.ModelLoadError` naming it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fastvideo.api.errors import ModelLoadError
from fastvideo.eval.registry import EvalOptions, Metric, MetricResult, Sample, register

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _edge(value: Any, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return int(value.get("shortest_edge") or value.get("height") or default)
    return default


def _features(output: Any) -> torch.Tensor:
    """transformers returns the projected features as a tensor (v4) or as ``pooler_output`` (v5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register
class ClipScore(Metric):
    name = "clip.clip_score"
    description = ("CLIP text-video score: 100 * cosine(frame, prompt) averaged over frames; needs --clip-model "
                   "PATH (a local transformers CLIP folder) and a prompt per video")
    needs_prompt = True
    model_option = "clip_model"
    model_flag = "--clip-model"
    higher_is_better = True

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        from transformers import AutoTokenizer, CLIPModel

        path = Path(str(options.clip_model))
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"--clip-model {path}: not a model folder (no config.json); give a local folder "
                                 "saved by transformers' CLIPModel.save_pretrained, with its tokenizer")
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"--clip-model {path}: config.json is not a JSON object ({exc})") from None
        if model_type != "clip":
            raise ModelLoadError(f"--clip-model {path}: config.json describes a {model_type!r} model, not CLIP; give "
                                 "a transformers CLIPModel folder")
        try:
            loaded: Any = CLIPModel.from_pretrained(str(path), output_loading_info=True)  # (model, loading info)
            model, info = loaded
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"--clip-model {path}: cannot load a CLIP model and tokenizer from it "
                                 f"({exc.__class__.__name__}: {exc})") from None
        missing = list(info.get("missing_keys") or [])
        if missing:  # never score with randomly initialised weights
            raise ModelLoadError(f"--clip-model {path}: the weights lack {len(missing)} tensors (e.g. {missing[0]}); "
                                 "the folder holds another model or a truncated checkpoint")
        self.model = model.eval().to(options.device)
        image_size = int(self.model.config.vision_config.image_size)
        pre: dict[str, Any] = {}
        if (path / "preprocessor_config.json").is_file():
            pre = json.loads((path / "preprocessor_config.json").read_text())
        self.resize_to = _edge(pre.get("size"), image_size)
        self.crop_to = _edge(pre.get("crop_size"), image_size)
        self.mean = torch.tensor(pre.get("image_mean", CLIP_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("image_std", CLIP_STD), dtype=torch.float32).view(1, 3, 1, 1)
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, C) floats in [0, 1] -> CLIP pixel values (N, 3, crop, crop)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        scale = self.resize_to / min(h, w)
        size = (max(self.resize_to, round(h * scale)), max(self.resize_to, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
        top, left = (size[0] - self.crop_to) // 2, (size[1] - self.crop_to) // 2
        x = x[:, :, top:top + self.crop_to, left:left + self.crop_to]
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def compute(self, sample: Sample) -> MetricResult:
        device = self.options.device
        tokens = self.tokenizer([sample.prompt or ""], padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        text = _features(self.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()}))
        text = F.normalize(text.float(), dim=-1)
        per_frame: list[float] = []
        video = sample.video
        step = max(1, self.options.clip_batch_size)
        for start in range(0, video.num_frames, step):
            pixels = self.preprocess(video.as_float(start, start + step)).to(device)
            image = F.normalize(_features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)
            per_frame += (100.0 * (image @ text.T).squeeze(-1).clamp(min=0.0)).tolist()
        return self.result(float(np.mean(per_frame)), per_frame=per_frame)
