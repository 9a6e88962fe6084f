"""The endpoints: Kaito's ``POST /chat``, the OpenAI API, ``/v1/models``, ``/health``, ``/metrics``.

Each route checks what it can for free, then takes a slot in the bounded generation queue (a 429 when
full), renders and counts the prompt off the event loop, checks the token budget, and generates.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from .base import BackendError, Completion
from .errors import RequestError
from .limits import Slot
from .openai_params import chat_logprobs, chat_sampling, completion_logprobs, completion_sampling
from .sampling import chat_kwargs, opt_int, sampling_from_kwargs
from .schemas import ChatCompletionRequest, ChatRequest, CompletionRequest
from .service import InferenceService

log = logging.getLogger("kaito.inference.server")

__all__ = ["router"]

router = APIRouter()


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


Service = Annotated[InferenceService, Depends(_service)]


def usage(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


class _SlotStreamingResponse(StreamingResponse):
    """A stream that holds its generation slot until it has been sent (or the client went away)."""

    def __init__(self, content: AsyncIterator[bytes], slot: Slot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def sse(chunks: AsyncIterator[dict[str, Any]], slot: Slot) -> StreamingResponse:
    """Server-Sent Events, ``data: [DONE]`` last; a failure mid-stream is an ``{"error": ...}`` event."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        except (RequestError, BackendError) as exc:
            yield b"data: " + json.dumps({"error": {"message": str(exc), "type": "server_error"}}).encode() + b"\n\n"
        except Exception:
            log.exception("stream failed")
            err = {"error": {"message": "internal server error (see the server log)", "type": "server_error"}}
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return _SlotStreamingResponse(
        body(),
        slot.hand_over(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ------------------------------------------------------------------------------------ probes, discovery


@router.get("/")
async def home() -> dict[str, str]:
    return {"message": "Server is running"}


@router.get("/health")
async def health(service: Service) -> JSONResponse:
    state = service.state
    if state.ready:
        return JSONResponse({"status": "Healthy"})
    if state.error:
        return JSONResponse({"status": "Failed", "detail": state.error}, status_code=503)
    return JSONResponse({"status": "Loading"}, status_code=503)


@router.get("/metrics")
async def prometheus(service: Service) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(service: Service) -> dict[str, Any]:
    return {"object": "list", "data": service.models()}


# ----------------------------------------------------------------------------------------- generation


@router.post("/chat")
async def chat(req: ChatRequest, service: Service) -> dict[str, Any]:
    service.ensure_ready()
    model = service.resolve_model(req.model)
    kwargs = chat_kwargs(req)
    messages = None
    if req.messages is not None:
        if not req.messages:
            raise RequestError(400, "messages must not be empty", "empty_messages")
        messages = [m.as_dict() for m in req.messages]
    elif req.prompt is None or not req.prompt.strip():
        raise RequestError(400, "prompt must be a non-empty string (or send messages)", "empty_prompt")
    params = sampling_from_kwargs(kwargs)
    requested, max_length = opt_int(kwargs, "max_new_tokens"), opt_int(kwargs, "max_length")
    with service.admit():
        if messages is not None:
            prompt, add_special, full = await service.chat_prompt(messages), False, False
        else:
            prompt, add_special, full = req.prompt or "", True, req.return_full_text
        params.max_new_tokens = await service.max_new_tokens(prompt, add_special, requested, max_length)
        c = await service.generate("/chat", model, prompt, params, add_special)
    return {
        "Result": (prompt + c.text) if full else c.text,
        "model": model,
        "finish_reason": c.finish_reason,
        "usage": usage(c),
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(req: ChatCompletionRequest, service: Service) -> dict[str, Any] | StreamingResponse:
    route = "/v1/chat/completions"
    service.ensure_ready()
    model = service.resolve_model(req.model)
    params = chat_sampling(req, service.backend)
    if not req.messages:
        raise RequestError(400, "messages must not be empty", "empty_messages")
    msgs = [m.as_dict() for m in req.messages]
    if not any(str(m["content"]).strip() for m in msgs):
        raise RequestError(400, "messages have no content", "empty_prompt")
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    want_lp = params.logprobs is not None
    with service.admit() as slot:
        prompt = await service.chat_prompt(msgs)
        params.max_new_tokens = await service.max_new_tokens(prompt, False, req.max_completion_tokens or req.max_tokens)
        if req.stream:

            async def chunks() -> AsyncIterator[dict[str, Any]]:
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                yield {**base, "choices": [first]}
                async for d in service.stream(route, model, prompt, params, False):
                    lps = chat_logprobs(d.logprobs or []) if want_lp else None
                    if d.text or (lps and lps["content"]):
                        choice = {"index": 0, "delta": {"content": d.text}, "logprobs": lps, "finish_reason": None}
                        yield {**base, "choices": [choice]}
                    if d.done is not None:
                        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": d.done.finish_reason}
                        yield {**base, "choices": [choice]}
                        if include_usage:
                            yield {**base, "choices": [], "usage": usage(d.done)}

            return sse(chunks(), slot)
        c = await service.generate(route, model, prompt, params, False)
    message = {"role": "assistant", "content": c.text}
    logprobs = chat_logprobs(c.logprobs or []) if want_lp else None
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": c.finish_reason, "logprobs": logprobs}],
        "usage": usage(c),
    }


@router.post("/v1/completions", response_model=None)
async def completions(req: CompletionRequest, service: Service) -> dict[str, Any] | StreamingResponse:
    route = "/v1/completions"
    service.ensure_ready()
    model = service.resolve_model(req.model)
    params = completion_sampling(req, service.backend)
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1:
        raise RequestError(400, "exactly one prompt per request is supported", "unsupported_batch", param="prompt")
    prompt = prompts[0]
    if not prompt.strip():
        raise RequestError(400, "prompt must be a non-empty string", "empty_prompt")
    requested = req.max_tokens if req.max_tokens is not None else 16
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "object": "text_completion", "created": created, "model": model}
    prefix = prompt if req.echo else ""
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    want_lp = params.logprobs is not None
    with service.admit() as slot:
        params.max_new_tokens = await service.max_new_tokens(prompt, True, requested)
        if req.stream:

            async def chunks() -> AsyncIterator[dict[str, Any]]:
                if prefix:
                    yield {**base, "choices": [{"index": 0, "text": prefix, "finish_reason": None, "logprobs": None}]}
                offset = 0  # where the next chunk's text starts in the completion (for text_offset)
                async for d in service.stream(route, model, prompt, params, True):
                    if d.text or d.logprobs or d.done is not None:
                        finish = d.done.finish_reason if d.done is not None else None
                        lps = completion_logprobs(d.logprobs or [], offset) if want_lp else None
                        offset += sum(len(e.token) for e in d.logprobs or [])
                        choice = {"index": 0, "text": d.text, "finish_reason": finish, "logprobs": lps}
                        yield {**base, "choices": [choice]}
                    if d.done is not None and include_usage:
                        yield {**base, "choices": [], "usage": usage(d.done)}

            return sse(chunks(), slot)
        c = await service.generate(route, model, prompt, params, True)
    logprobs = completion_logprobs(c.logprobs or []) if want_lp else None
    choice = {"index": 0, "text": prefix + c.text, "finish_reason": c.finish_reason, "logprobs": logprobs}
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(c),
    }
