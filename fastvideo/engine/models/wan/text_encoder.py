"""UMT5 text encoding for Wan, through ``transformers``.

Contract: :class:`WanTextEncoder.encode(prompts)` returns ``(B, max_length, dim)`` embeddings in the
encoder's dtype, computed exactly as diffusers' ``WanPipeline`` does: prompts are cleaned (ftfy
when installed, double HTML unescape, whitespace collapsed), tokenized to ``max_length`` with
padding and truncation, encoded with the attention mask, and every position past a prompt's real
length is set to zero. Before any cleaning, a prompt is cut to :func:`raw_prompt_bound` characters
(``RAW_CHARS_PER_TOKEN`` per token of ``max_length``: far more than ``max_length`` tokens of any real text), so
a huge prompt costs no more CPU than that bound; the tokenizer truncates to ``max_length`` tokens anyway. The
tokenizer and model come from a diffusers folder's ``tokenizer/`` and
``text_encoder/`` sub-folders; no network access is ever attempted. Loading refuses, with a
:class:`~fastvideo.api.ModelLoadError` naming the file and the fix, truncated or corrupt weights, a
``config.json`` whose model does not match the weights (checked from the safetensors headers before
``transformers`` reads them, so nothing is silently left randomly initialized), and a tokenizer that
cannot tokenize (:func:`check_tokenizer`: a plain English probe gives the unknown token, or two
different probes give the same ids).
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


#: Characters of raw prompt kept per token of ``max_length`` before cleaning. A UMT5 token of real text
#: covers a few characters (rarely more than 16), so 512 tokens never need more than this many.
RAW_CHARS_PER_TOKEN = 32


def raw_prompt_bound(max_length: int) -> int:
    """Characters of a raw prompt that can matter for ``max_length`` tokens (see module contract)."""
    return RAW_CHARS_PER_TOKEN * max_length


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
                    device: torch.device, max_length: int = 512, weights: list[Path] | None = None,
                    variant: str | None = None) -> "WanTextEncoder":
        """Load tokenizer and UMT5 encoder from local diffusers sub-folders (offline); ``weights`` (the
        encoder's safetensors, variant ``variant``) are checked against its config first."""
        from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

        from fastvideo.engine.loader import check_shapes, find_weight_files, read_shapes

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        check_tokenizer(tokenizer, tokenizer_dir)
        config = UMT5Config.from_pretrained(str(encoder_dir), local_files_only=True)
        with torch.device("meta"):
            skeleton = UMT5EncoderModel(config)
        check_shapes(skeleton, read_shapes(weights or find_weight_files(encoder_dir, variant)), encoder_dir)
        model: torch.nn.Module = UMT5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True,
                                                                  variant=variant)
        model.to(device).eval().requires_grad_(False)
        return cls(tokenizer, model, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Embed ``prompts``; positions past each prompt's length are exactly zero."""
        bound = raw_prompt_bound(self.max_length)
        cleaned = [clean_prompt(p[:bound]) for p in prompts]
        tokens = self.tokenizer(cleaned, padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(ids, mask).last_hidden_state
        keep = mask.gt(0).unsqueeze(-1)
        return torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))


#: Two plain texts every real tokenizer splits into known, different tokens.
TOKENIZER_PROBES = ("a red fox runs through the snow", "two people walk on a beach")


def check_tokenizer(tokenizer, folder: Path) -> None:
    """Refuse a tokenizer that cannot tokenize (see module contract) with a ModelLoadError naming ``folder``."""
    from fastvideo.api.errors import ModelLoadError

    ids = [list(tokenizer(text, add_special_tokens=False).input_ids) for text in TOKENIZER_PROBES]
    unk = tokenizer.unk_token_id
    if not ids[0] or ids[0] == ids[1] or (unk is not None and any(unk in row for row in ids)):
        raise ModelLoadError(f"the tokenizer in {folder} cannot tokenize: {TOKENIZER_PROBES[0]!r} became {ids[0][:12]} "
                             f"(unknown-token id {unk}). Its vocabulary file (tokenizer.json or spiece.model) is "
                             "missing or does not match tokenizer_config.json; copy the tokenizer/ folder from the "
                             "original model")
