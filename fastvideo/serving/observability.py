"""Request ids and structured logs for the servers.

Contract:
- :data:`request_id_var` holds the id of the HTTP request / WebSocket session being handled (a
  ``contextvars.ContextVar``, so it follows asyncio tasks); :func:`new_request_id` makes one and
  :func:`accept_request_id` keeps a client's ``x-request-id`` when it is short and printable.
- :func:`printable` makes client text (a request path, a header) safe to log: control characters (CR, LF, ESC,
  ...; also U+2028/2029) become backslash escapes and long text is cut, so a ``%0A`` in a path cannot
  forge a log line or color a terminal.
- :class:`RequestIdFilter` stamps every log record with ``request_id`` (``-`` outside a request);
  :class:`JsonFormatter` writes one JSON object per line (time, level, logger, message,
  request_id, plus any ``extra=`` fields that are JSON-safe).
- :func:`setup_server_logging` installs one handler on the root logger, ``text`` or ``json``;
  it is called by the CLI entry points only, never at import.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("fastvideo_request_id", default="-")

_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_STD_ATTRS = set(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "request_id"}


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def accept_request_id(header_value: str | None) -> str:
    """The client's id when it is safe to echo and log, else a fresh one."""
    if header_value and _ID_OK.match(header_value):
        return header_value
    return new_request_id()


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, limit: int = 256) -> str:
    """``text`` with control characters escaped and cut to ``limit`` characters (see module contract)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                               else f"\\u{ord(m.group()):04x}"), text)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    value = repr(value)
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, separators=(",", ":"))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: a CLI run in-process (tests, notebooks) whose stderr is swapped or closed afterwards leaves no handler
    bound to a dead stream (later records would print "--- Logging error ---" tracebacks)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401 - the current stderr
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current stderr always wins
        pass


def setup_server_logging(log_format: str = "text", level: str | int = "INFO") -> None:
    """Route every logger through one stderr handler in ``text`` or ``json`` format."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, str(level).upper(), logging.INFO))
    # uvicorn installs its own handlers when given a log config; we pass log_config=None and keep ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
