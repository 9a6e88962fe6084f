"""The server's one error shape: ``{"error": {"message", "type", "code"}, "detail": message}``.

Every failure answers it, whatever raised it (a route's :class:`APIError`, a backend's ``BackendError``,
request validation, routing, a limit, or an unexpected exception, whose text never leaves the log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .base import BackendError

log = logging.getLogger("kaito.inference.server")

__all__ = ["APIError", "error_body", "error_response", "install_error_handlers"]

# The ``code`` of an HTTP error raised by routing or a limit, by status.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


class APIError(Exception):
    """A request answered with ``status`` and the error body (raised anywhere under a route)."""

    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


def error_body(message: str, code: str, type_: str = "invalid_request_error") -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": code}, "detail": message}


def error_response(
    status: int,
    message: str,
    code: str,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(message, code, type_), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception with the error shape; a 5xx never carries a traceback."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return error_response(exc.status, exc.message, exc.code, exc.type, headers)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        return error_response(exc.status, str(exc), exc.code, type_)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(400, "invalid request: " + "; ".join(parts), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error (see the server log)", "internal_error", "server_error")
