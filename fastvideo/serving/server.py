"""Running the servers under uvicorn: ``fastvideo serve`` and ``fastvideo router-serve``.

Contract: :func:`run_server` loads the generator *before* listening (a bad model path or config
fails fast with the loader's error, nothing half-started; with ``pool.devices`` a device this
machine lacks is refused first, naming ``pool.devices[i]``, and the generator loads on the first
device: the app's device pool starts the others), builds the app, serves it with uvicorn
on ``config.server.host:port`` until SIGINT/SIGTERM, then shuts down gracefully - uvicorn stops
accepting and lets in-flight requests finish, the app's lifespan drains the job queue (see
:mod:`fastvideo.serving.app`) - and finally releases the generator. :func:`run_router` does the
same for the router app. Both return the process exit code (0 after a clean shutdown).
"""

from __future__ import annotations

import logging
import time

from fastvideo.serving.config import RouterConfig, ServeConfig

logger = logging.getLogger(__name__)


def _graceful_server(config: "object"):
    """A uvicorn Server that exits 0 after a graceful SIGTERM/SIGINT instead of re-raising the signal."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            logger.info("signal %d received: shutting down gracefully", sig)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()

    return GracefulServer(config)  # type: ignore[arg-type]


def run_server(config: ServeConfig) -> int:
    import uvicorn

    from fastvideo.runtime.device_pool import check_devices
    from fastvideo.runtime.generator import VideoGenerator
    from fastvideo.runtime.pool import normalize_devices
    from fastvideo.serving.app import build_app

    check_devices(normalize_devices(config.pool.devices))
    t0 = time.perf_counter()
    generator = VideoGenerator.from_config(config.generator)
    logger.info("model %s loaded in %.1fs from %s", generator.preset.name, time.perf_counter() - t0,
                generator.model_path)
    try:
        app = build_app(config, generator)
        uv = uvicorn.Config(app, host=config.server.host, port=config.server.port, log_config=None,
                            access_log=False, timeout_keep_alive=30,
                            timeout_graceful_shutdown=int(config.server.drain_timeout_s) + 30)
        _graceful_server(uv).run()
    finally:
        generator.shutdown()
    return 0


def run_router(config: RouterConfig) -> int:
    import uvicorn

    from fastvideo.serving.router import build_router_app

    app = build_router_app(config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                        timeout_keep_alive=30, timeout_graceful_shutdown=30)
    _graceful_server(uv).run()
    return 0
