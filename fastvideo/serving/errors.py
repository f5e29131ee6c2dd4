"""OpenAI-style errors for the HTTP servers.

Contract: every error response body is the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}`` with the matching status: 400 bad input
(``invalid_request_error``), 401 bad or missing key (``authentication_error``), 404 unknown id,
model or route (``not_found_error`` / ``invalid_request_error``), 413 body too large
(``request_too_large``; :class:`BodyTooLarge`, raised while the body streams in), 415 a POST body that is
not JSON or a form (``unsupported_media_type``), 429 queue
full (``rate_limit_error``, with ``retry-after``), 503 not ready / shutting down
(``service_unavailable``, with ``retry-after``), 500 anything unexpected (``server_error``; the
message never leaks a traceback). :func:`install_error_handlers` maps FastAPI's validation errors,
Starlette's HTTP errors, :class:`APIError` and a translation-layer
:class:`~fastvideo.api.RequestError` (400, ``param`` = its field) onto it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastvideo.api.errors import FastVideoError, RequestError

logger = logging.getLogger(__name__)


class APIError(FastVideoError):
    """An error answered with the OpenAI envelope."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


class BodyTooLarge(APIError):
    """A request body past ``server.max_body_bytes``, whatever its transfer encoding: raised by the middleware's
    counting ``receive`` as soon as the limit is crossed, so the rest is never read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes (server.max_body_bytes)",
                         code="request_too_large")


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported_media_type(content_type: str | None) -> APIError:
    return APIError(415, f"content-type {content_type or '(none)'!r:.80} is not accepted; send application/json, "
                         "multipart/form-data or application/x-www-form-urlencoded", code="unsupported_media_type")


def not_found(message: str, param: str | None = None, code: str = "not_found") -> APIError:
    return APIError(404, message, type="invalid_request_error", param=param, code=code)


def unavailable(message: str, retry_after_s: int, code: str = "service_unavailable") -> APIError:
    return APIError(503, message, type="service_unavailable", code=code, headers={"retry-after": str(retry_after_s)})


def queue_full(message: str, retry_after_s: int) -> APIError:
    return APIError(429, message, type="rate_limit_error", code="queue_full",
                    headers={"retry-after": str(retry_after_s)})


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the OpenAI envelope."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError) -> JSONResponse:
        # Raised by the translation layer, already named for this edge (fastvideo.api.translate_request).
        return error_response(bad_request(str(exc), exc.field))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _validation_param(tuple(first.get("loc", ())))
        message = first.get("msg", "invalid request")
        return error_response(bad_request(f"{param}: {message}" if param else message, param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {401: "authentication_error", 404: "invalid_request_error", 405: "invalid_request_error",
                 413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(error_body(message, type=kinds.get(exc.status_code, "server_error" if exc.status_code >= 500
                                                               else "invalid_request_error"),
                                       code=codes.get(exc.status_code)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", exc)
        return JSONResponse(error_body("internal server error", type="server_error", code="internal_error"),
                            status_code=500)
