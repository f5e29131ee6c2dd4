"""``/v1/stream`` session features: settings frames, presets, pause/resume, loop generation, single clip,
and the prompt-enhancer hook (a mixin of :class:`fastvideo.serving.stream_routes.StreamSession`).

Contract:
- Every settings frame (``seed_prompts_updated``, ``enhancement_updated``, ``auto_extension_updated``,
  ``loop_generation_updated``, ``generation_paused_updated``, ``single_clip_updated``,
  ``preset_updated``, ``pause``, ``resume``) needs an initialized session (else ``invalid_message``),
  counts as session activity, and is answered ``session_updated{state, segment_idx, client_id, preset,
  preset_label, curated_prompts, <flags>}`` - or by an error frame, leaving the settings unchanged.
- Presets: ``preset`` must name the served model (its served name, preset name or path; else
  ``error{code:"preset_mismatch"}`` listing them); ``preset_label`` is free display text.
- Pause: no new segment starts while ``generation_paused`` (the running one finishes; requested
  ones wait; waiting does not keep the session from its idle timeout). Resume starts them again.
- Loop generation: while ``loop_generation_enabled`` and not paused, each time the session has
  nothing running or waiting the next segment starts by itself, continuing the previous one: its
  prompt is written by the enhancer when auto-extension is on, else the next curated prompt (in
  turn), else the last prompt. When ``segment_idx`` reaches ``generation_segment_cap`` (or the session
  its ``max_segments``) the stream completes: ``ltx2_stream_complete{reason:"segment_cap"}``.
- Single-clip mode (set before the first segment; later ``single_clip_updated`` is refused
  ``single_clip``): the session makes one segment, then ``ltx2_stream_complete{reason:"single_clip"}``;
  a second segment request is refused (``single_clip``).
- Enhancer (:class:`fastvideo.serving.prompt_source.PromptSource`, ``ServerState.prompt_source``):
  without one, turning enhancement or auto-extension on, and ``enhance_prompt`` / ``rewrite_prompt``,
  are answered ``error{code:"enhancer_not_configured"}``. With one, ``enhance_prompt`` ->
  ``prompt_enhanced{prompt, enhanced}``, ``rewrite_prompt`` -> ``prompt_rewrites{prompt, rewrites}``,
  an enhancement-enabled session's segment prompts are enhanced before they run (an enhancer failure
  is reported ``enhancement_failed`` and the segment runs with the prompt as given). A source with a
  ``check(prompt, *, session)`` (the safety filter) checks every segment's prompt before it runs. A
  :class:`~fastvideo.api.FastVideoError` with a string ``code`` raised by the source (e.g. a blocked
  prompt: ``prompt_blocked``) is sent as that error frame and the segment does not run (no GPU time);
  a loop stops there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastvideo.api import FastVideoError

from fastvideo.serving.prompt_source import NOT_CONFIGURED, next_loop_prompt
from fastvideo.serving.stream_protocol import (
    AutoExtensionUpdated,
    EnhancementUpdated,
    EnhancePrompt,
    GenerationPausedUpdated,
    LoopGenerationUpdated,
    Pause,
    PresetUpdated,
    Resume,
    RewritePrompt,
    SeedPromptsUpdated,
    SingleClipUpdated,
)

logger = logging.getLogger(__name__)

def refusal_code(exc: BaseException) -> str | None:
    """The error code of a prompt-source error that refuses the prompt (e.g. ``prompt_blocked``), else None."""
    code = getattr(exc, "code", None)
    return code if isinstance(exc, FastVideoError) and isinstance(code, str) and code else None


SETTINGS_FRAMES = (SeedPromptsUpdated, EnhancementUpdated, AutoExtensionUpdated, LoopGenerationUpdated,
                   GenerationPausedUpdated, SingleClipUpdated, PresetUpdated, Pause, Resume)
ENHANCER_FRAMES = (EnhancePrompt, RewritePrompt)


class SessionFeatures:
    """The feature half of a stream session (see module contract). The host class provides ``session``,
    ``state``, ``slog``, ``send``, ``error``, ``initialized``, ``unpaused``, ``_has_work``, ``_enqueue``,
    ``_complete`` and ``_new_segment``."""

    session: Any
    state: Any
    slog: Any
    initialized: bool
    unpaused: asyncio.Event
    ending: bool
    closed: bool
    requested: int
    _looping: bool = False

    # provided by the host class
    async def send(self, kind: str, **fields: Any) -> None:
        raise NotImplementedError

    async def error(self, code: str, message: str, *, retryable: bool = False, **extra: Any) -> None:
        raise NotImplementedError

    def _has_work(self) -> bool:
        raise NotImplementedError

    async def _enqueue(self, segment: Any) -> None:
        raise NotImplementedError

    async def _complete(self, reason: str = "stop_requested") -> None:
        raise NotImplementedError

    def _new_segment(self, prompt: str, source: str) -> Any:
        raise NotImplementedError

    @property
    def prompt_source(self) -> Any:
        return self.state.prompt_source

    def preset_error(self, preset: str | None) -> str | None:
        """Why ``preset`` cannot be this session's (None: it can)."""
        if preset is None or preset in self.state.model_ids:
            return None
        return (f"preset {preset!r:.120} is not served here; this server serves {self.state.defaults.name!r} "
                f"(also known as {sorted(self.state.model_ids)})")

    async def handle_settings(self, msg: Any) -> None:
        s = self.session
        if isinstance(msg, (EnhancementUpdated, AutoExtensionUpdated)) and msg.enabled and self.prompt_source is None:
            await self.error(*NOT_CONFIGURED)
            return
        if isinstance(msg, PresetUpdated):
            why = self.preset_error(msg.preset)
            if why is not None:
                await self.error("preset_mismatch", why, param="preset")
                return
            if msg.preset is not None:
                s.preset = msg.preset
            if msg.preset_label is not None:
                s.preset_label = msg.preset_label
        elif isinstance(msg, SeedPromptsUpdated):
            s.curated_prompts = list(msg.seed_prompts)
        elif isinstance(msg, EnhancementUpdated):
            s.enhancement_enabled = msg.enabled
        elif isinstance(msg, AutoExtensionUpdated):
            s.auto_extension_enabled = msg.enabled
        elif isinstance(msg, LoopGenerationUpdated):
            s.loop_generation_enabled = msg.enabled
        elif isinstance(msg, SingleClipUpdated):
            if self.requested > 0:
                await self.error("single_clip", f"this session already requested {self.requested} segment(s); "
                                 "single-clip mode is set before the first segment")
                return
            s.single_clip_mode = msg.enabled
        elif isinstance(msg, (GenerationPausedUpdated, Pause, Resume)):
            paused = msg.paused if isinstance(msg, GenerationPausedUpdated) else isinstance(msg, Pause)
            s.generation_paused = paused
            if paused:
                self.unpaused.clear()
            else:
                self.unpaused.set()
        s.touch()
        self.slog.log(s.id, "settings", frame=msg.type, **s.describe())
        await self.send("session_updated", **s.describe())
        await self.maybe_loop()

    async def handle_enhancer(self, msg: Any) -> None:
        source = self.prompt_source
        if source is None:
            await self.error(*NOT_CONFIGURED)
            return
        self.session.touch()
        started = time.perf_counter()
        try:
            if isinstance(msg, EnhancePrompt):
                enhanced = await source.enhance(msg.prompt, session=self.session)
                await self.send("prompt_enhanced", prompt=msg.prompt, enhanced=enhanced)
            else:
                rewrites = await source.rewrite(msg.prompt, msg.count, session=self.session)
                await self.send("prompt_rewrites", prompt=msg.prompt, rewrites=list(rewrites))
        except Exception as exc:  # noqa: BLE001 - an enhancer failure is the client's answer, not a crash
            code = refusal_code(exc)
            if code is not None:
                await self.error(code, str(exc))
                return
            logger.warning("session %s: prompt enhancer failed: %s", self.session.id, exc)
            await self.error("enhancement_failed", f"the prompt enhancer failed: {type(exc).__name__}: {exc}",
                             retryable=True)
            return
        self.slog.log(self.session.id, msg.type, latency_s=round(time.perf_counter() - started, 4))

    async def segment_prompt(self, prompt: str, source: str) -> tuple[str, str] | None:
        """The prompt a segment runs with (checked, and enhanced when the session has enhancement on) and its
        source; None when the prompt source refused it (the error frame is sent: the segment must not run)."""
        enhancer = self.prompt_source
        if enhancer is None:
            return prompt, source
        try:
            check = getattr(enhancer, "check", None)
            if check is not None:
                await check(prompt, session=self.session)
            if not self.session.enhancement_enabled or source in ("enhanced", "auto_extension"):
                return prompt, source
            return await enhancer.enhance(prompt, session=self.session), "enhanced"
        except Exception as exc:  # noqa: BLE001
            code = refusal_code(exc)
            if code is not None:
                idx = self.session.segment_idx
                self.slog.log(self.session.id, "segment_refused", segment_idx=idx, code=code)
                await self.error(code, str(exc), segment_idx=idx)
                return None
            logger.warning("session %s: prompt enhancer failed: %s", self.session.id, exc)
            await self.error("enhancement_failed", f"the prompt enhancer failed ({type(exc).__name__}: {exc}); "
                             "the segment runs with the prompt as given", retryable=True)
            return prompt, source

    def loop_cap(self) -> int:
        return min(self.state.sessions.segment_cap, self.state.sessions.max_segments)

    async def maybe_loop(self) -> None:
        """Start the loop's next segment if the session loops, is idle and not paused (see module contract)."""
        if self._looping:  # one at a time: the enhancer's answer is awaited before enqueueing
            return
        self._looping = True
        try:
            await self._maybe_loop()
        finally:
            self._looping = False

    async def _maybe_loop(self) -> None:
        s = self.session
        if (not self.initialized or self.closed or self.ending or not s.loop_generation_enabled
                or s.generation_paused or s.single_clip_mode or self._has_work()):
            return
        if s.segment_idx >= self.loop_cap() or self.requested >= self.state.sessions.max_segments:
            await self._complete("segment_cap")
            return
        if s.auto_extension_enabled and self.prompt_source is not None and s.last_prompt:
            try:
                prompt = await self.prompt_source.extend(s.last_prompt, session=s)
                source = "auto_extension"
            except Exception as exc:  # noqa: BLE001
                code = refusal_code(exc)
                if code is not None:  # the written prompt was refused: the loop stops here
                    await self.error(code, str(exc))
                    return
                logger.warning("session %s: auto-extension failed: %s", s.id, exc)
                await self.error("enhancement_failed", f"auto-extension failed ({type(exc).__name__}: {exc}); "
                                 "the loop continues with the last prompt", retryable=True)
                prompt, source = s.last_prompt, "loop"
        else:
            picked = next_loop_prompt(s)
            if picked is None:  # nothing to loop on yet: the first segment_prompt_source starts it
                return
            prompt, source = picked, "curated" if s.curated_prompts else "loop"
        await self._enqueue(self._new_segment(prompt, source))
