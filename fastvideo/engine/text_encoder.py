"""UMT5 text encoding for Wan, through ``transformers``.

Contract: :class:`WanTextEncoder.encode(prompts)` returns ``(B, max_length, dim)`` embeddings in the
encoder's dtype, computed exactly as diffusers' ``WanPipeline`` does: prompts are cleaned (ftfy
when installed, double HTML unescape, whitespace collapsed), tokenized to ``max_length`` with
padding and truncation, encoded with the attention mask, and every position past a prompt's real
length is set to zero. The tokenizer and model come from a diffusers folder's ``tokenizer/`` and
``text_encoder/`` sub-folders; no network access is ever attempted.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

try:  # optional, as in the reference pipeline
    import ftfy  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    ftfy = None


def clean_prompt(text: str) -> str:
    """Normalize a prompt the way Wan's reference pipeline does."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class WanTextEncoder:
    """Tokenizer + UMT5 encoder pair producing Wan's zero-padded prompt embeddings."""

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int = 512) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length

    @classmethod
    def from_folder(cls, tokenizer_dir: Path, encoder_dir: Path, *, dtype: torch.dtype,
                    device: torch.device, max_length: int = 512) -> "WanTextEncoder":
        """Load tokenizer and UMT5 encoder from local diffusers sub-folders (offline)."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        model: torch.nn.Module = UMT5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True)
        model.to(device).eval().requires_grad_(False)
        return cls(tokenizer, model, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Embed ``prompts``; positions past each prompt's length are exactly zero."""
        cleaned = [clean_prompt(p) for p in prompts]
        tokens = self.tokenizer(cleaned, padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(ids, mask).last_hidden_state
        keep = mask.gt(0).unsqueeze(-1)
        return torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
