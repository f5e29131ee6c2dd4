"""LTX-2 prompt encoding: Gemma-3 (through ``transformers``) -> packed hidden states -> the two connector streams.

Contract
--------
- :class:`LTX2TextEncoder` pairs a tokenizer with a Gemma-3 model (``Gemma3ForConditionalGeneration`` as the
  diffusers folder ships it; any ``transformers`` model that takes ``input_ids`` / ``attention_mask`` and returns
  ``hidden_states`` with ``output_hidden_states=True`` works, e.g. ``Gemma3TextModel``).
- :meth:`LTX2TextEncoder.gemma_embeds` is ``LTX2Pipeline._get_gemma_prompt_embeds`` of diffusers 0.42: prompts
  are stripped, tokenized with **left** padding to exactly ``max_sequence_length`` tokens (truncating; special
  tokens added; the tokenizer's pad token defaults to its EOS token, and its ``padding_side`` is set to ``left``,
  as the pipeline does), run with the attention mask, and every hidden state (the embeddings plus one per layer)
  is stacked on a last axis and flattened: ``(B, L, hidden_size * (num_layers + 1))`` in ``dtype`` (default: the
  model's), with the ``(B, L)`` int64 mask.
- :meth:`LTX2TextEncoder.encode` runs those through :class:`~fastvideo.engine.models.ltx2.connectors.LTX2Connectors`
  and returns :class:`LTX2PromptEmbeddings` (video embeddings, audio embeddings, mask for the DiT), as the pipeline
  does before its denoising loop (for classifier-free guidance it encodes ``[negative..., positive...]`` in one
  batch; the connectors treat samples independently, so any batching gives the same rows).
- :meth:`LTX2TextEncoder.from_folder` loads ``tokenizer/`` and ``text_encoder/`` sub-folders offline; a tokenizer
  that cannot tokenize, or weights that leave any model parameter missing or unused, raise
  :class:`~fastvideo.api.errors.ModelLoadError` naming the folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastvideo.api.errors import ModelLoadError
from fastvideo.engine.models.ltx2.connectors import LTX2Connectors

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_SEQUENCE_LENGTH", "LTX2PromptEmbeddings", "LTX2TextEncoder"]

#: ``LTX2Pipeline.__call__``'s default ``max_sequence_length``.
DEFAULT_MAX_SEQUENCE_LENGTH = 1024


@dataclass
class LTX2PromptEmbeddings:
    """What the LTX-2 DiT takes for its text: one embedding per stream and the shared token mask."""

    video: torch.Tensor  #: (B, L, video connector width)
    audio: torch.Tensor  #: (B, L, audio connector width)
    mask: torch.Tensor  #: (B, L) int64, 1 = attend


class LTX2TextEncoder:
    """Tokenizer + Gemma-3 producing LTX-2's packed per-layer text hidden states (module contract)."""

    def __init__(self, tokenizer: Any, model: torch.nn.Module,
                 max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH) -> None:
        if max_sequence_length <= 0:
            raise ValueError(f"max_sequence_length must be positive, got {max_sequence_length!r}")
        self.tokenizer = tokenizer
        self.model = model
        self.max_sequence_length = max_sequence_length
        # as LTX2Pipeline._get_gemma_prompt_embeds: Gemma expects left padding for chat-style prompts
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def from_folder(cls, tokenizer_dir: str | Path, encoder_dir: str | Path, *, dtype: torch.dtype,
                    device: torch.device | str = "cpu", variant: str | None = None,
                    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH) -> "LTX2TextEncoder":
        """Load the tokenizer and Gemma-3 model from local diffusers sub-folders (offline, module contract)."""
        from transformers import AutoTokenizer, Gemma3ForConditionalGeneration

        from fastvideo.engine.models.wan.text_encoder import check_tokenizer

        tokenizer_dir, encoder_dir = Path(tokenizer_dir).expanduser(), Path(encoder_dir).expanduser()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the Gemma tokenizer from {tokenizer_dir}: {exc}") from exc
        check_tokenizer(tokenizer, tokenizer_dir)
        try:
            loaded: Any = Gemma3ForConditionalGeneration.from_pretrained(
                str(encoder_dir), dtype=dtype, local_files_only=True, variant=variant, output_loading_info=True)
            model, info = loaded
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the Gemma-3 text encoder from {encoder_dir}: {exc}") from exc
        problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys",
                                                                     "mismatched_keys")}
        if any(problems.values()):
            raise ModelLoadError(f"the Gemma-3 weights in {encoder_dir} do not match its config.json "
                                 f"({ {k: v[:5] for k, v in problems.items() if v} }); use the text_encoder/ folder "
                                 "of the same LTX-2 checkpoint")
        model.to(torch.device(device)).eval().requires_grad_(False)
        return cls(tokenizer, model, max_sequence_length=max_sequence_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def gemma_embeds(self, prompts: str | list[str], *,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(packed hidden states (B, L, D * (layers + 1)), mask (B, L))`` (module contract)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tokens = self.tokenizer([p.strip() for p in prompts], padding="max_length",
                                max_length=self.max_sequence_length, truncation=True, add_special_tokens=True,
                                return_tensors="pt")
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        stacked = torch.stack(tuple(out.hidden_states), dim=-1)
        model_dtype = next(self.model.parameters()).dtype
        return stacked.flatten(2, 3).to(dtype=dtype or model_dtype), mask.view(len(prompts), -1)

    @torch.no_grad()
    def encode(self, prompts: str | list[str], connectors: LTX2Connectors, *,
               dtype: torch.dtype | None = None) -> LTX2PromptEmbeddings:
        """Prompts -> :class:`LTX2PromptEmbeddings` through ``connectors`` (module contract)."""
        embeds, mask = self.gemma_embeds(prompts, dtype=dtype)
        param = next(connectors.parameters())
        video, audio, dit_mask = connectors(embeds.to(param.device, param.dtype), mask.to(param.device),
                                            padding_side=self.tokenizer.padding_side)
        return LTX2PromptEmbeddings(video=video, audio=audio, mask=dit_mask)
