"""LTX-2 denoising steps for a batch of requests: one DiT forward per guidance pass for the whole batch.

Contract
--------
- :class:`LTX2DiTInputs` is one DiT call: its tensors (rows stacked on dim 0: packed video/audio tokens in the text
  dtype, the two connector outputs and the text mask, the per-row ``timestep`` ``(B,)``, optionally per-token
  ``video_timestep`` ``(B, N_v)`` / ``audio_timestep`` ``(B, N_a)`` and ``video_coords`` ``(B, 3, N_v, 2)``) and its
  static settings (latent grid, conditioning fps, audio frames, ``use_cross_timestep``, the STG blocks or
  modality isolation of the pass). :meth:`LTX2DiTInputs.group_key` is everything but the row count and the values
  (static settings, which optional tensors are given, per-row shapes and dtypes): calls with one key stack into one
  call (:meth:`LTX2DiTInputs.cat`). :func:`run_dit` is the eager transformer call on it, returning the transformer's
  ``(video, audio)`` in its compute dtype.
- :func:`denoise_steps` ``(states, i, forward)`` runs step ``i`` of every state (each at ``next_step == i``, else
  ``ValueError`` / ``IndexError`` before any work). Per guidance pass (main: CFG ``[uncond, cond]`` rows or the
  single row; then STG; then modality isolation) it builds each member's call (:func:`step_passes`), stacks the
  calls of one group key in member order and runs ``forward`` once per group, then splits the rows back. Members of
  one runtime bucket share sizes, frames, steps and branch, so their calls share a key and each pass is one forward
  for the batch; members that differ in a static setting (another STG block list, CFG on for one and off for the
  other, a continuation with a different number of condition tokens or audio prefix) simply form their own groups
  (more forwards, same numbers). A member without STG / modality guidance takes no row in that pass. Guidance and
  the sampler step stay per member and eager, in float32, exactly as the single-request step: the batch of one
  (``LTX2Components.denoise_step``) is this function with one state.
- States are advanced only after every forward of the step has run: a forward that raises leaves every member at
  ``next_step == i`` (the caller may retry members alone to find the culprit). An error in one member's guidance
  or sampler step stops the loop there (earlier members have advanced: ``next_step == i + 1``).
- Numerics: a row's result does not depend on the other rows in principle (every op of the DiT is per sample), but
  a batched matmul / attention may pick other kernels or blockings, so batched rows may differ from solo ones by
  float rounding (measured on the tiny CPU fp32 model: see tests/runtime/test_ltx2_batching.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:
    from fastvideo.engine.models.ltx2.pipeline import LTX2State
    from fastvideo.engine.models.ltx2.transformer import LTX2Transformer

__all__ = ["DiTForward", "LTX2DiTInputs", "denoise_steps", "rescale_noise_cfg", "run_dit", "step_passes"]

_TENSORS = ("video", "audio", "video_embeds", "audio_embeds", "mask", "timestep", "video_timestep",
            "audio_timestep", "video_coords")


@dataclass
class LTX2DiTInputs:
    """One LTX-2 DiT call (module contract)."""

    video: torch.Tensor
    audio: torch.Tensor
    video_embeds: torch.Tensor
    audio_embeds: torch.Tensor
    mask: torch.Tensor
    timestep: torch.Tensor
    video_timestep: torch.Tensor | None
    audio_timestep: torch.Tensor | None
    video_coords: torch.Tensor | None
    grid: tuple[int, int, int]
    fps: float
    audio_frames: int
    use_cross_timestep: bool
    stg_blocks: tuple[int, ...] | None = None
    isolate_modalities: bool = False

    @property
    def rows(self) -> int:
        return int(self.video.shape[0])

    def tensors(self) -> tuple[torch.Tensor | None, ...]:
        """The tensor fields in :data:`_TENSORS` order (None where not given)."""
        return tuple(getattr(self, name) for name in _TENSORS)

    def with_tensors(self, tensors: Sequence[torch.Tensor | None]) -> "LTX2DiTInputs":
        """The same call on other tensors (same order as :meth:`tensors`)."""
        values: dict[str, Any] = dict(zip(_TENSORS, tensors))
        return replace(self, **values)

    def static_key(self) -> tuple[Any, ...]:
        return (self.grid, float(self.fps), int(self.audio_frames), bool(self.use_cross_timestep), self.stg_blocks,
                bool(self.isolate_modalities))

    def group_key(self) -> tuple[Any, ...]:
        """Static settings and per-row shapes/dtypes: calls with one key stack (module contract)."""
        shapes = tuple(None if t is None else (tuple(t.shape[1:]), str(t.dtype), str(t.device))
                       for t in self.tensors())
        return self.static_key() + shapes

    def shape_key(self) -> tuple[Any, ...]:
        """:meth:`group_key` with the row count: what a captured graph of this call is keyed by."""
        return (self.rows,) + self.group_key()

    @classmethod
    def cat(cls, parts: Sequence["LTX2DiTInputs"]) -> "LTX2DiTInputs":
        """Rows of ``parts`` (one group key) stacked in order."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        stacked = []
        for index in range(len(_TENSORS)):
            values = [p.tensors()[index] for p in parts]
            stacked.append(None if values[0] is None else torch.cat(values, dim=0))  # type: ignore[arg-type]
        return first.with_tensors(stacked)


#: ``forward(inputs) -> (video, audio)``: the eager :func:`run_dit` or a graph runner's replay of it.
DiTForward = Callable[[LTX2DiTInputs], tuple[torch.Tensor, torch.Tensor]]


def run_dit(transformer: "LTX2Transformer", inputs: LTX2DiTInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager transformer call for ``inputs`` (module contract)."""
    f, h, w = inputs.grid
    extra: dict[str, Any] = {}
    if inputs.video_coords is not None:
        extra["video_coords"] = inputs.video_coords
    if inputs.stg_blocks is not None:
        extra["spatio_temporal_guidance_blocks"] = list(inputs.stg_blocks)
    if inputs.isolate_modalities:
        extra["isolate_modalities"] = True
    timestep = inputs.timestep
    with torch.no_grad():
        return transformer(
            hidden_states=inputs.video, audio_hidden_states=inputs.audio, encoder_hidden_states=inputs.video_embeds,
            audio_encoder_hidden_states=inputs.audio_embeds,
            timestep=timestep if inputs.video_timestep is None else inputs.video_timestep,
            audio_timestep=timestep if inputs.audio_timestep is None else inputs.audio_timestep, sigma=timestep,
            encoder_attention_mask=inputs.mask, audio_encoder_attention_mask=inputs.mask, num_frames=f, height=h,
            width=w, fps=inputs.fps,
            audio_num_frames=inputs.audio_frames, use_cross_timestep=inputs.use_cross_timestep, **extra)


def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_pred_text: torch.Tensor, rescale: float) -> torch.Tensor:
    """diffusers' ``rescale_noise_cfg`` (std-matching toward the conditional prediction)."""
    std_text = noise_pred_text.std(dim=list(range(1, noise_pred_text.ndim)), keepdim=True)
    std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
    rescaled = noise_cfg * (std_text / std_cfg)
    return rescale * rescaled + (1 - rescale) * noise_cfg


@dataclass
class _Passes:
    """One member's calls for one step: the main pass, then STG and modality (None: that guidance is off)."""

    main: LTX2DiTInputs
    stg: LTX2DiTInputs | None
    modality: LTX2DiTInputs | None


def _check_step(st: "LTX2State", i: int) -> None:
    if i != st.next_step:
        raise ValueError(f"denoise_step({i}): steps run in order; the next one is {st.next_step}")
    if i >= st.steps:
        raise IndexError(f"denoise_step({i}): the schedule has {st.steps} steps")


def step_passes(st: "LTX2State", i: int) -> _Passes:
    """The DiT calls step ``i`` of ``st`` makes (no forward runs, ``st`` is unchanged)."""
    _check_step(st, i)
    g = st.guidance
    x, a = st.latents, st.audio_latents
    t = st.sampler.timesteps[i]
    dtype = st.text_dtype
    rows = 2 if g.cfg else 1
    x_in = (torch.cat([x] * 2) if g.cfg else x).to(dtype)
    a_in = (torch.cat([a] * 2) if g.cfg else a).to(dtype)
    timestep = t.expand(rows)
    cond, acond = st.conditioning, st.audio_conditioning
    video_timestep: torch.Tensor | None = None
    audio_timestep: torch.Tensor | None = None
    coords: torch.Tensor | None = None
    if cond is not None:  # conditioned tokens see less (or no) noise: t * (1 - mask)
        video_timestep = timestep.unsqueeze(-1) * (1 - cond.mask.expand(rows, -1))
        if cond.coords is not None:
            coords = cond.coords.expand(rows, -1, -1, -1)
    if acond is not None:
        audio_timestep = timestep.unsqueeze(-1) * (1 - acond.mask.expand(rows, -1))
    main = LTX2DiTInputs(x_in, a_in, st.video_embeds, st.audio_embeds, st.text_mask, timestep, video_timestep,
                         audio_timestep, coords, st.grid, st.conditioning_fps, st.audio_frames, g.use_cross_timestep)
    if not (g.stg or g.modality):
        return _Passes(main, None, None)
    # the perturbed passes see the conditional half only
    def half(value: torch.Tensor | None, cond_rows: bool) -> torch.Tensor | None:
        if value is None or not g.cfg:
            return value
        return value.chunk(2, dim=0)[1 if cond_rows else 0]

    single = main.with_tensors([x.to(dtype), a.to(dtype), half(st.video_embeds, True), half(st.audio_embeds, True),
                                half(st.text_mask, True), half(timestep, False), half(video_timestep, False),
                                half(audio_timestep, False), half(coords, False)])
    stg = replace(single, stg_blocks=tuple(g.stg_blocks or ())) if g.stg else None
    modality = replace(single, isolate_modalities=True) if g.modality else None
    return _Passes(main, stg, modality)


def _run_grouped(forward: DiTForward, calls: Sequence[LTX2DiTInputs]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One ``forward`` per group key over ``calls``; each call's float32 ``(video, audio)`` rows, in order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, call in enumerate(calls):
        groups.setdefault(call.group_key(), []).append(index)
    results: list[Any] = [None] * len(calls)
    for members in groups.values():
        video, audio = forward(LTX2DiTInputs.cat([calls[k] for k in members]))
        video, audio = video.float(), audio.float()
        start = 0
        for k in members:
            rows = calls[k].rows
            results[k] = (video[start:start + rows], audio[start:start + rows])
            start += rows
    return results


def denoise_steps(states: Sequence["LTX2State"], i: int, forward: DiTForward) -> None:
    """Step ``i`` of every state, one forward per guidance pass and group (module contract)."""
    passes = [step_passes(st, i) for st in states]
    main = _run_grouped(forward, [p.main for p in passes])
    with_stg = [k for k, p in enumerate(passes) if p.stg is not None]
    stg = dict(zip(with_stg, _run_grouped(forward, [passes[k].stg for k in with_stg])))  # type: ignore[misc]
    with_mod = [k for k, p in enumerate(passes) if p.modality is not None]
    mod = dict(zip(with_mod, _run_grouped(forward, [passes[k].modality for k in with_mod])))  # type: ignore[misc]
    for k, st in enumerate(states):
        _guide_and_step(st, i, main[k], stg.get(k), mod.get(k))


def _guide_and_step(st: "LTX2State", i: int, main: tuple[torch.Tensor, torch.Tensor],
                    stg: tuple[torch.Tensor, torch.Tensor] | None,
                    mod: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Guidance in x0 space and the sampler step of one member, in place on ``st``."""
    g = st.guidance
    x, a = st.latents, st.audio_latents
    sigma = st.sampler.sigmas[i]
    pred_v, pred_a = main

    def x0(sample: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        return sample - velocity * sigma

    v_cfg: torch.Tensor | int = 0
    a_cfg: torch.Tensor | int = 0
    if g.cfg:
        v_un, v_c = pred_v.chunk(2)
        x0_v, x0_v_un = x0(x, v_c), x0(x, v_un)
        v_cfg = (g.guidance_scale - 1) * (x0_v - x0_v_un)
        a_un, a_c = pred_a.chunk(2)
        x0_a, x0_a_un = x0(a, a_c), x0(a, a_un)
        a_cfg = (float(g.audio_guidance_scale or 0) - 1) * (x0_a - x0_a_un)
    else:
        x0_v, x0_a = x0(x, pred_v), x0(a, pred_a)
    v_stg: torch.Tensor | int = 0
    a_stg: torch.Tensor | int = 0
    if stg is not None:
        v_stg = g.stg_scale * (x0_v - x0(x, stg[0]))
        a_stg = float(g.audio_stg_scale or 0) * (x0_a - x0(a, stg[1]))
    v_mod: torch.Tensor | int = 0
    a_mod: torch.Tensor | int = 0
    if mod is not None:
        v_mod = (g.modality_scale - 1) * (x0_v - x0(x, mod[0]))
        a_mod = (float(g.audio_modality_scale or 0) - 1) * (x0_a - x0(a, mod[1]))

    guided_v = x0_v + v_cfg + v_stg + v_mod
    guided_a = x0_a + a_cfg + a_stg + a_mod
    if g.guidance_rescale > 0:
        guided_v = rescale_noise_cfg(guided_v, x0_v, g.guidance_rescale)
    audio_rescale = float(g.audio_guidance_rescale or 0)
    if audio_rescale > 0:
        guided_a = rescale_noise_cfg(guided_a, x0_a, audio_rescale)
    cond, acond = st.conditioning, st.audio_conditioning
    if cond is not None and cond.clean is not None:  # condition path: blend the clean condition back in
        m = cond.mask.unsqueeze(-1)
        guided_v = guided_v * (1 - m) + cond.clean * m
    if acond is not None:  # carried-over audio prefix, likewise
        am = acond.mask.unsqueeze(-1)
        guided_a = guided_a * (1 - am) + acond.clean * am
    velocity_v = (x - guided_v) / sigma
    velocity_a = (a - guided_a) / sigma
    latents = st.sampler.step(velocity_v, i, x, state=st.video_state)
    if cond is not None and cond.keep_first_frame:  # image-to-video: latent frame 0 is never stepped
        latents[:, :cond.first_frame_tokens] = x[:, :cond.first_frame_tokens]
    audio_latents = st.sampler.step(velocity_a, i, a, state=st.audio_state)
    st.latents, st.audio_latents = latents, audio_latents
    st.next_step = i + 1

