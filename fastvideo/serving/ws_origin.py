"""The browser ``Origin`` policy of every WebSocket edge (the server's ``/v1/stream`` and the router's).

Contract:
- :func:`origin_allowed` is the one rule: a browser socket from ``origin`` may open the edge when it is the
  edge's own origin (the ``Host`` header the socket was opened on: same host and port, under the origin's
  scheme, so a TLS proxy in front keeps working), an entry of ``allowed`` (origins normalized by
  :func:`fastvideo.api.serve.check_origin`), or any when ``allowed`` holds ``"*"``. ``null`` (sandboxed frames,
  ``file://`` pages) or anything that is no http(s) origin is refused unless ``"*"`` is listed.
- :func:`refuse_foreign_origin` applies it to a WebSocket *before accept*: a socket with an ``Origin`` header the
  rule refuses is closed with 1008 (policy violation), which the ASGI server answers as HTTP 403, one warning is
  logged naming the edge, and it returns True; a socket without an ``Origin`` header (not a browser) or with an
  allowed one is left untouched (False) for the edge to accept.
- Standard library, ``fastvideo.api`` and the WebSocket object's ``headers`` / ``close`` only: the router imports
  it without the runtime.
"""

from __future__ import annotations

import logging
from typing import Any

from fastvideo.api.serve import normalize_origin

logger = logging.getLogger(__name__)

__all__ = ["WS_POLICY_VIOLATION", "origin_allowed", "refuse_foreign_origin"]

#: WebSocket close code for a refused origin; closed before accept it is an HTTP 403.
WS_POLICY_VIOLATION = 1008


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser socket from ``origin``, opened on ``host``, may open the edge (see module contract)."""
    if "*" in allowed:
        return True
    given = normalize_origin(origin)
    if given is None:  # "null" (sandboxed pages, file://) or garbage
        return False
    if given in allowed:
        return True
    if not host:
        return False
    scheme = given.split("://", 1)[0]
    return normalize_origin(f"{scheme}://{host}") == given


async def refuse_foreign_origin(ws: Any, allowed: list[str], edge: str, setting: str) -> bool:
    """Close ``ws`` (not yet accepted) when its ``Origin`` is refused; whether it did (see module contract).
    ``edge`` names the endpoint and ``setting`` the config key listing the allowed origins, for the log line."""
    origin = ws.headers.get("origin")
    if origin is None or origin_allowed(origin, ws.headers.get("host"), allowed):
        return False
    logger.warning("%s: refused a browser socket from origin %r (not this server's own, and not in %s)", edge,
                   origin[:200], setting)
    await ws.close(WS_POLICY_VIOLATION, "origin not allowed")  # before accept: HTTP 403
    return True
