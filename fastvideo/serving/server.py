"""Running the servers under uvicorn: ``fastvideo serve`` and ``fastvideo router-serve``.

Contract: :func:`run_server` loads the generator *before* listening (a bad model path or config
fails fast with the loader's error, nothing half-started; FastVideo serve values this server cannot
honour are refused first (:func:`fastvideo.serving.config.check_serve_config`); with ``pool.devices`` a
device this machine lacks is refused next, naming ``pool.devices[i]``, then an output folder that cannot be
created or written, naming ``server.output_dir``; the generator loads on the first device: the app's
device pool starts the others), builds the app, serves it with uvicorn
on ``config.server.host:port`` until SIGINT/SIGTERM, then shuts down gracefully: the first signal
starts the app's drain (``app.state.drain``, see :mod:`fastvideo.serving.app`) while uvicorn keeps
serving, so job status, downloads, ``/health`` and ``/readyz`` (503, ``draining``) answer and only new
work is refused; once the drain is done uvicorn stops accepting, lets in-flight requests finish and
runs the lifespan's shutdown. A second signal stops serving at once (the drain itself stays bounded by
``server.drain_timeout_s``). Finally the generator is released.
:func:`run_router` does the same for the router app (no drain). Both return the process exit code (0
after a clean shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastvideo.serving.config import RouterConfig, ServeConfig

logger = logging.getLogger(__name__)


def _graceful_server(config: "object", drain: Callable[[], Awaitable[object]] | None = None):
    """A uvicorn Server that exits 0 after a graceful SIGTERM/SIGINT instead of re-raising the signal; with
    ``drain``, the first signal runs it while the server keeps serving, and only then stops uvicorn."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: object) -> None:
            if drain is not None and not self.draining and not self.should_exit:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is not None:
                    self.draining = True
                    logger.info("signal %d received: draining (reads keep being served)", sig)
                    loop.call_soon_threadsafe(self._start_drain)
                    return
            logger.info("signal %d received: shutting down gracefully", sig)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()

        def _start_drain(self) -> None:
            task = asyncio.ensure_future(self._drain_then_exit())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

        async def _drain_then_exit(self) -> None:
            assert drain is not None
            try:
                await drain()
            except Exception:  # noqa: BLE001 - stop anyway; the lifespan fails what is left visibly
                logger.exception("draining failed; stopping")
            self.should_exit = True

    return GracefulServer(config)  # type: ignore[arg-type]


_BACKGROUND: set[asyncio.Future] = set()


def run_server(config: ServeConfig) -> int:
    import uvicorn

    from fastvideo.runtime.device_pool import check_devices
    from fastvideo.runtime.generator import VideoGenerator
    from fastvideo.runtime.pool import normalize_devices
    from fastvideo.serving.app import build_app
    from fastvideo.serving.config import check_serve_config
    from fastvideo.serving.video_store import check_output_dir

    check_serve_config(config)  # FastVideo serve fields this server cannot honour, however the config was built
    check_devices(normalize_devices(config.pool.devices))
    check_output_dir(config.server.output_dir)  # before the model loads: an unwritable folder fails fast
    t0 = time.perf_counter()
    generator = VideoGenerator.from_config(config.generator)
    logger.info("model %s loaded in %.1fs from %s", generator.preset.name, time.perf_counter() - t0,
                generator.model_path)
    try:
        app = build_app(config, generator)
        uv = uvicorn.Config(app, host=config.server.host, port=config.server.port, log_config=None,
                            access_log=False, timeout_keep_alive=30,
                            ws_max_size=ws_message_limit(config.server.max_body_bytes),
                            timeout_graceful_shutdown=int(config.server.drain_timeout_s) + 30)
        _graceful_server(uv, drain=app.state.drain).run()
    finally:
        generator.shutdown()
    return 0


def ws_message_limit(max_body_bytes: int) -> int:
    """The largest WebSocket message the server accepts: a ``session_init_v2`` whose ``input_reference`` is an
    image of ``max_body_bytes`` as base64 (4 characters per 3 bytes) plus 64 KiB for the data-URL prefix and the
    frame's other fields, so the stream edge's own limit (``server.max_body_bytes``, with its clear error) is the
    one a client meets, not uvicorn's default 16 MiB close."""
    return 4 * -(-max_body_bytes // 3) + 64 * 1024


def run_router(config: RouterConfig) -> int:
    import uvicorn

    from fastvideo.serving.router import build_router_app

    app = build_router_app(config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                        timeout_keep_alive=30, timeout_graceful_shutdown=30)
    _graceful_server(uv).run()
    return 0
