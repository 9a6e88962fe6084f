"""The inference HTTP server (FastAPI): Kaito's ``POST /chat`` plus an OpenAI-compatible API.

Endpoints (``routes.py``): ``POST /chat`` (``{"prompt"| "messages", "generate_kwargs"}`` -> ``{"Result": ...}``),
``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` answers Server-Sent Events),
``GET /v1/models``, ``GET /health`` (503 until the model is loaded), ``GET /metrics`` (Prometheus).
Every error is a JSON body ``{"error": {"message", "type", "code"}, "detail": message}`` (``errors.py``);
a 5xx never carries a traceback. The limits (``limits.py``): body size, an optional bearer token, a
bounded generation queue; tokenization runs off the event loop (``service.py``).

This module only assembles them: :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .base import Backend
from .config import API_KEY_ENV, InferenceConfig
from .errors import RequestError, install_error_handlers
from .limits import ApiKeys, BearerAuth, BodyLimit
from .metrics import InferenceMetrics
from .routes import router
from .service import InferenceService, ServerState

log = logging.getLogger("kaito.inference.server")

__all__ = ["RequestError", "ServerState", "create_app"]


def create_app(backend: Backend, config: InferenceConfig, metrics: InferenceMetrics | None = None) -> FastAPI:
    """The app serving ``backend``; the model loads in the background once the app starts (``/health``
    answers 503 meanwhile). The bearer token comes from ``config.api_key_file`` and ``$KAITO_API_KEY``."""
    metrics = metrics or InferenceMetrics()
    service = InferenceService(backend, config, metrics)
    keys = ApiKeys(config.api_key_file, os.environ.get(API_KEY_ENV))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(service))
        yield
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        backend.close()

    app = FastAPI(title="kaito inference", lifespan=lifespan)
    app.state.service = service
    app.state.kaito = service.state
    app.state.metrics = metrics
    app.state.backend = backend
    install_error_handlers(app)
    # Outermost last: the count sees every answer, the 401 comes before the body is read, the 413 as it is.
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    app.add_middleware(BearerAuth, keys=keys)

    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            metrics.requests.labels(_route(request), "500").inc()
            raise
        metrics.requests.labels(_route(request), str(response.status_code)).inc()
        return response

    app.include_router(router)
    if keys.enabled:
        log.info("bearer-token auth on (every path but /health and /metrics)")
    return app


async def _load(service: InferenceService) -> None:
    t0 = time.monotonic()
    try:
        await service.load()
    except Exception as exc:  # reported by /health; the pod's probes restart it
        service.state.error = f"{type(exc).__name__}: {exc}"
        log.exception("model load failed")
        return
    log.info("model ready in %.1fs: %s", time.monotonic() - t0, service.backend.model_names)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
