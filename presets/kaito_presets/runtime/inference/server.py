"""The inference HTTP server (FastAPI): Kaito's ``POST /chat`` plus an OpenAI-compatible API.

Endpoints: ``POST /chat`` (``{"prompt"| "messages", "generate_kwargs"}`` -> ``{"Result": ...}``),
``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` answers Server-Sent Events),
``GET /v1/models``, ``GET /health`` (503 until the model is loaded), ``GET /metrics`` (Prometheus).
Every error is a JSON body ``{"error": {"message", "type", "code"}, "detail": message}``; a 5xx never
carries a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .base import Backend, BackendError, Completion, Delta, SamplingParams
from .config import InferenceConfig
from .metrics import InferenceMetrics

log = logging.getLogger("kaito.inference.server")

# generate_kwargs understood by /chat (``stop_strings`` is transformers' spelling of ``stop``).
_GEN_KEYS = {
    "max_new_tokens",
    "max_length",
    "temperature",
    "top_p",
    "top_k",
    "do_sample",
    "repetition_penalty",
    "stop",
    "stop_strings",
    "seed",
}
# What Kaito's transformers runtime passed on to the HF text-generation pipeline and ``generate`` but that has
# no meaning here: accepted and ignored, with one log line per request naming them.
_IGNORED_KEYS = {
    # pipeline options
    "return_full_text",
    "clean_up_tokenization_spaces",
    "prefix",
    "handle_long_generation",
    "return_text",
    "add_special_tokens",
    "truncation",
    "padding",
    "continue_final_message",
    "skip_special_tokens",
    # generate() options
    "min_length",
    "min_new_tokens",
    "early_stopping",
    "max_time",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "penalty_alpha",
    "typical_p",
    "min_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "bad_words_ids",
    "force_words_ids",
    "renormalize_logits",
    "constraints",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_decoder_ids",
    "sequence_bias",
    "guidance_scale",
    "low_memory",
    "use_cache",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
    "num_return_sequences",
    "output_scores",
    "output_logits",
    "output_attentions",
    "output_hidden_states",
    "return_dict_in_generate",
    "return_tensors",
}
# Ignored options whose non-default value asks for another response shape, which this server cannot give.
_SHAPE_DEFAULTS: dict[str, Any] = {
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
    "return_tensors": False,
}


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


def _error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "code": code}, "detail": message},
    )


# ------------------------------------------------------------------------------------- request bodies


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def as_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise APIError(400, "only text content parts are supported", "unsupported_content")
            content = "".join(p.text or "" for p in content)
        return {"role": self.role, "content": content or ""}


class ChatRequest(BaseModel):
    """Kaito's /chat body (the seed's curl sends just ``{"prompt": ...}``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    prompt: str | None = None
    messages: list[Message] | None = None
    generate_kwargs: dict[str, Any] | None = None
    model: str | None = None
    return_full_text: bool = True


class _OpenAIBase(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    repetition_penalty: float | None = Field(None, gt=0)


class ChatCompletionRequest(_OpenAIBase):
    messages: list[Message]
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_OpenAIBase):
    prompt: str | list[str]
    echo: bool = False


# ----------------------------------------------------------------------------------------- the app


class ServerState:
    def __init__(self) -> None:
        self.ready = False
        self.error: str | None = None


def create_app(backend: Backend, config: InferenceConfig, metrics: InferenceMetrics | None = None) -> FastAPI:
    metrics = metrics or InferenceMetrics()
    state = ServerState()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def _load() -> None:
            t0 = time.monotonic()
            try:
                await backend.start()
            except Exception as exc:  # reported by /health; the pod's probes restart it
                state.error = f"{type(exc).__name__}: {exc}"
                log.exception("model load failed")
                return
            state.ready = True
            metrics.loaded.set(1)
            log.info("model ready in %.1fs: %s", time.monotonic() - t0, backend.model_names)

        task = asyncio.create_task(_load())
        yield
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        backend.close()

    app = FastAPI(title="kaito inference", lifespan=lifespan)
    app.state.kaito = state
    app.state.metrics = metrics
    app.state.backend = backend

    # -------------------------------------------------------------------------------- errors

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.code, exc.type)

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        return _error(exc.status, str(exc), exc.code, type_)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error(400, "invalid request: " + "; ".join(parts), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal server error (see the server log)", "internal_error", "server_error")

    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            metrics.requests.labels(_route(request), "500").inc()
            raise
        metrics.requests.labels(_route(request), str(response.status_code)).inc()
        return response

    # ---------------------------------------------------------------------------- helpers

    def ensure_ready() -> None:
        if not state.ready:
            msg = "model failed to load: " + state.error if state.error else "model is still loading"
            raise APIError(503, msg, "model_not_ready", "server_error")

    def resolve_model(name: str | None) -> str:
        names = backend.model_names
        if name is None or name == "":
            return names[0]
        if name not in names:
            raise APIError(404, f"model {name!r} not found; served models: {', '.join(names)}", "model_not_found")
        return name

    def budget(prompt: str, add_special: bool, requested: int | None, max_length: int | None = None) -> tuple[int, int]:
        """(prompt tokens, max new tokens) after checking the limits."""
        n_prompt = backend.count_tokens(prompt, add_special_tokens=add_special)
        limit = backend.max_model_len
        if n_prompt >= limit:
            raise APIError(
                400,
                f"prompt is {n_prompt} tokens; this model's context is {limit} tokens (prompt plus completion)",
                "context_length_exceeded",
            )
        if max_length is not None:
            if max_length - n_prompt < 1:
                raise APIError(
                    400,
                    f"max_length {max_length} leaves no room after the {n_prompt}-token prompt",
                    "context_length_exceeded",
                )
            # As in the HF pipeline, max_length (prompt plus completion) is a cap, not a demand: it is clamped
            # to this server's limits (Kaito's documented /chat body sends max_length 200).
            requested = min(max_length - n_prompt, config.max_new_tokens_limit, limit - n_prompt)
        if requested is not None and requested > config.max_new_tokens_limit:
            raise APIError(
                400,
                f"max tokens {requested} exceeds this server's limit of {config.max_new_tokens_limit}",
                "max_tokens_exceeded",
            )
        if requested is None:
            return n_prompt, min(config.max_new_tokens, limit - n_prompt)
        if n_prompt + requested > limit:
            raise APIError(
                400,
                f"prompt ({n_prompt} tokens) plus max tokens ({requested}) exceeds this model's "
                f"context of {limit} tokens",
                "context_length_exceeded",
            )
        return n_prompt, requested

    async def run_stream(
        route: str, model: str, prompt: str, params: SamplingParams, add_special: bool
    ) -> AsyncIterator[Delta]:
        t0 = time.perf_counter()
        first = True
        metrics.running.inc()
        try:
            async for delta in backend.stream(model, prompt, params, add_special_tokens=add_special):
                if first and (delta.text or delta.done):
                    metrics.ttft.labels(route).observe(time.perf_counter() - t0)
                    first = False
                if delta.done is not None:
                    metrics.prompt_tokens.labels(model).inc(delta.done.prompt_tokens)
                    metrics.generation_tokens.labels(model).inc(delta.done.completion_tokens)
                yield delta
        finally:
            metrics.running.dec()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)

    async def run(route: str, model: str, prompt: str, params: SamplingParams, add_special: bool) -> Completion:
        async for delta in run_stream(route, model, prompt, params, add_special):
            if delta.done is not None:
                return delta.done
        raise APIError(500, "generation ended without a result", "internal_error", "server_error")

    def stop_list(stop: str | list[str] | None) -> list[str]:
        if stop is None:
            return []
        return [stop] if isinstance(stop, str) else [s for s in stop if s]

    def usage(c: Completion) -> dict[str, int]:
        return {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        }

    def sse(deltas: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in deltas:
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            except (APIError, BackendError) as exc:
                yield (
                    b"data: " + json.dumps({"error": {"message": str(exc), "type": "server_error"}}).encode() + b"\n\n"
                )
            except Exception:
                log.exception("stream failed")
                err = {"error": {"message": "internal server error (see the server log)", "type": "server_error"}}
                yield b"data: " + json.dumps(err).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    # ---------------------------------------------------------------------------- routes

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "Healthy"})
        if state.error:
            return JSONResponse({"status": "Failed", "detail": state.error}, status_code=503)
        return JSONResponse({"status": "Loading"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": created, "owned_by": "kaito", "root": config.model}
                for n in backend.model_names
            ],
        }

    @app.post("/chat")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        ensure_ready()
        model = resolve_model(req.model)
        kwargs: dict[str, Any] = dict(req.generate_kwargs or {})
        for key, value in (req.model_extra or {}).items():  # Kaito also takes them at the top level
            kwargs.setdefault(key, value)
        unknown = sorted(set(kwargs) - _GEN_KEYS - _IGNORED_KEYS)
        if unknown:
            raise APIError(
                400,
                f"unsupported generate_kwargs {unknown}; supported: {sorted(_GEN_KEYS)} "
                "(other transformers pipeline/generate options are accepted and ignored)",
                "invalid_generate_kwargs",
            )
        for key, default in _SHAPE_DEFAULTS.items():
            if kwargs.get(key) not in (None, default):
                raise APIError(
                    400,
                    f"{key}={kwargs[key]!r} is not supported by this server (only {default!r}: one text result)",
                    "invalid_generate_kwargs",
                )
        ignored = sorted(k for k in set(kwargs) & _IGNORED_KEYS if k != "return_full_text")
        if ignored:
            log.info("/chat: ignoring generate_kwargs with no effect on this runtime: %s", ", ".join(ignored))
        if "stop_strings" in kwargs:
            if "stop" in kwargs:
                raise APIError(400, "give stop or stop_strings, not both", "invalid_generate_kwargs")
            kwargs["stop"] = kwargs.pop("stop_strings")
        if req.messages is not None:
            if not req.messages:
                raise APIError(400, "messages must not be empty", "empty_messages")
            prompt, add_special, full = backend.apply_chat_template([m.as_dict() for m in req.messages]), False, False
        else:
            if req.prompt is None or not req.prompt.strip():
                raise APIError(400, "prompt must be a non-empty string (or send messages)", "empty_prompt")
            prompt, add_special, full = req.prompt, True, req.return_full_text
        params = _sampling_from_kwargs(kwargs)
        _, params.max_new_tokens = budget(
            prompt, add_special, _opt_int(kwargs, "max_new_tokens"), _opt_int(kwargs, "max_length")
        )
        c = await run("/chat", model, prompt, params, add_special)
        return {
            "Result": (prompt + c.text) if full else c.text,
            "model": model,
            "finish_reason": c.finish_reason,
            "usage": usage(c),
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        ensure_ready()
        model = resolve_model(req.model)
        if req.n != 1:
            raise APIError(400, "only n=1 is supported", "unsupported_n")
        if not req.messages:
            raise APIError(400, "messages must not be empty", "empty_messages")
        msgs = [m.as_dict() for m in req.messages]
        if not any(str(m["content"]).strip() for m in msgs):
            raise APIError(400, "messages have no content", "empty_prompt")
        prompt = backend.apply_chat_template(msgs)
        params = _sampling(req)
        _, params.max_new_tokens = budget(prompt, False, req.max_completion_tokens or req.max_tokens)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            c = await run("/v1/chat/completions", model, prompt, params, False)
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": c.text},
                        "finish_reason": c.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage(c),
            }
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            yield {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            }
            async for d in run_stream("/v1/chat/completions", model, prompt, params, False):
                if d.text:
                    yield {**base, "choices": [{"index": 0, "delta": {"content": d.text}, "finish_reason": None}]}
                if d.done is not None:
                    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": d.done.finish_reason}]}
                    if include_usage:
                        yield {**base, "choices": [], "usage": usage(d.done)}

        return sse(chunks())

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        ensure_ready()
        model = resolve_model(req.model)
        if req.n != 1:
            raise APIError(400, "only n=1 is supported", "unsupported_n")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise APIError(400, "exactly one prompt per request is supported", "unsupported_batch")
        prompt = prompts[0]
        if not prompt.strip():
            raise APIError(400, "prompt must be a non-empty string", "empty_prompt")
        params = _sampling(req)
        requested = req.max_tokens if req.max_tokens is not None else 16
        _, params.max_new_tokens = budget(prompt, True, requested)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prefix = prompt if req.echo else ""
        if not req.stream:
            c = await run("/v1/completions", model, prompt, params, True)
            return {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": prefix + c.text, "finish_reason": c.finish_reason, "logprobs": None}],
                "usage": usage(c),
            }
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            base = {"id": cid, "object": "text_completion", "created": created, "model": model}
            if prefix:
                yield {**base, "choices": [{"index": 0, "text": prefix, "finish_reason": None, "logprobs": None}]}
            async for d in run_stream("/v1/completions", model, prompt, params, True):
                if d.text or d.done is not None:
                    finish = d.done.finish_reason if d.done is not None else None
                    yield {**base, "choices": [{"index": 0, "text": d.text, "finish_reason": finish, "logprobs": None}]}
                if d.done is not None and include_usage:
                    yield {**base, "choices": [], "usage": usage(d.done)}

        return sse(chunks())

    return app


def _route(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _opt_int(kwargs: dict[str, Any], key: str) -> int | None:
    value = kwargs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise APIError(400, f"{key} must be a positive integer, got {value!r}", "invalid_generate_kwargs")
    return value


def _opt_float(kwargs: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = kwargs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise APIError(400, f"{key} must be a number in [{lo}, {hi}], got {value!r}", "invalid_generate_kwargs")
    return float(value)


def _sampling_from_kwargs(kwargs: dict[str, Any]) -> SamplingParams:
    stop = kwargs.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise APIError(400, "stop must be a string or a list of strings", "invalid_generate_kwargs")
    do_sample = kwargs.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):
        raise APIError(400, "do_sample must be a boolean", "invalid_generate_kwargs")
    top_k = kwargs.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise APIError(400, "top_k must be a non-negative integer", "invalid_generate_kwargs")
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, "seed must be an integer", "invalid_generate_kwargs")
    rp = kwargs.get("repetition_penalty")
    return SamplingParams(
        max_new_tokens=1,
        temperature=_opt_float(kwargs, "temperature", 1.0, 0.0, 100.0),
        top_p=_opt_float(kwargs, "top_p", 1.0, 0.0, 1.0),
        top_k=top_k or None,
        do_sample=do_sample,
        repetition_penalty=None if rp is None else _opt_float(kwargs, "repetition_penalty", 1.0, 1e-6, 100.0),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        seed=seed,
    )


def _sampling(req: _OpenAIBase) -> SamplingParams:
    stop = [req.stop] if isinstance(req.stop, str) else [s for s in (req.stop or []) if s]
    return SamplingParams(
        max_new_tokens=1,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        repetition_penalty=req.repetition_penalty,
        stop=stop,
        seed=req.seed,
    )


# ---------------------------------------------------------------------------------- running it


class ServerThread:
    """Run an app under uvicorn in a background thread (tests, benchmarks)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, name="kaito-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
