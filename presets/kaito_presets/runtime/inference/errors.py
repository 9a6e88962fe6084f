"""The server's one error shape: ``{"error": {"message", "type", "code"}, "detail": message}``.

Every failure answers it, whatever raised it (a route's :class:`RequestError`, a backend's ``BackendError``,
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

__all__ = ["RequestError", "error_body", "error_response", "install_error_handlers"]

# The ``code`` of an HTTP error raised by routing or a limit, by status.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


class RequestError(Exception):
    """A request answered with ``status`` and the error body (raised anywhere under a route)."""

    def __init__(
        self, status: int, message: str, code: str, type_: str = "invalid_request_error", *, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param


def error_body(
    message: str, code: str, type_: str = "invalid_request_error", param: str | None = None
) -> dict[str, object]:
    """The body; ``param`` (OpenAI's field, which its clients expose as ``.param``) names the request field."""
    error: dict[str, object] = {"message": message, "type": type_, "code": code}
    if param is not None:
        error["param"] = param
    return {"error": error, "detail": message}


def error_response(
    status: int,
    message: str,
    code: str,
    type_: str = "invalid_request_error",
    *,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(message, code, type_, param), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception with the error shape; a 5xx never carries a traceback."""

    @app.exception_handler(RequestError)
    async def _api_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return error_response(exc.status, exc.message, exc.code, exc.type, headers=headers, param=exc.param)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        return error_response(exc.status, str(exc), exc.code, type_, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts, params = [], []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            params.append(loc)
            if err.get("type") == "extra_forbidden":
                # An OpenAI parameter this server does not implement: refused, never silently dropped.
                parts.append(f"{loc}: unsupported parameter (this server does not implement it; remove it)")
            else:
                parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        param = params[0] if len(params) == 1 and params[0] else None
        return error_response(400, "invalid request: " + "; ".join(parts), "invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error (see the server log)", "internal_error", "server_error")
