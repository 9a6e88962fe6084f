"""The OpenAI request parameters, each honoured or refused, never silently dropped.

The request models (``schemas.py``) refuse parameters this server does not know at all. This module takes
the ones it knows: it turns those a backend honours into :class:`SamplingParams` and refuses, with a 400
naming the parameter (``param`` in the error body), a non-default value of any other: tool calling,
constrained output (``response_format``), several choices, and whatever the serving backend's
``honours`` leaves out. It also shapes the log-probabilities the backend computed into OpenAI's two
response forms. Pure: nothing here touches the model, the network or the event loop.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .base import Backend, SamplingParams, TokenLogprob
from .errors import RequestError
from .schemas import TOP_LOGPROBS_MAX, ChatCompletionRequest, CompletionRequest, OpenAIRequest

log = logging.getLogger("kaito.inference.server")

__all__ = [
    "LOGPROB_FLOOR",
    "chat_logprobs",
    "chat_sampling",
    "completion_logprobs",
    "completion_sampling",
]

#: A log-probability of -inf is not JSON; it is sent as this (vLLM's floor too).
LOGPROB_FLOOR = -9999.0
_BIAS_LIMIT = 100.0


def _refuse(param: str, message: str, code: str = "unsupported_parameter") -> RequestError:
    return RequestError(400, f"{param}: {message}", code, param=param)


def _needs(backend: Backend, param: str) -> None:
    if param not in backend.honours:
        raise _refuse(param, f"the {backend.name} backend cannot honour it; leave it out (or at its default)")


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            token = int(key)
        except ValueError:
            msg = f"keys are token ids (integers as strings), got {key!r}"
            raise _refuse("logit_bias", msg, "invalid_request") from None
        if token < 0 or not -_BIAS_LIMIT <= value <= _BIAS_LIMIT:
            raise _refuse(
                "logit_bias",
                f"token {key}: the id must be non-negative and the bias in [-100, 100], got {value}",
                "invalid_request",
            )
        bias[token] = float(value)
    return bias


def _common(req: OpenAIRequest, backend: Backend, route: str) -> SamplingParams:
    """The parameters both bodies share; ``max_new_tokens`` is set later, by the token budget."""
    if req.n not in (None, 1):
        msg = f"n: only n=1 is supported (one choice per request), got {req.n}"
        raise RequestError(400, msg, "unsupported_n", param="n")
    if req.stream_options is not None and not req.stream:
        raise _refuse("stream_options", "only allowed with stream: true", "invalid_request")
    params = SamplingParams(
        max_new_tokens=1,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k,
        repetition_penalty=req.repetition_penalty,
        stop=[req.stop] if isinstance(req.stop, str) else [s for s in (req.stop or []) if s],
        seed=req.seed,
    )
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value:
            _needs(backend, name)
            setattr(params, name, float(value))
    params.logit_bias = _logit_bias(req.logit_bias)
    if params.logit_bias:
        _needs(backend, "logit_bias")
    if req.user:
        # OpenAI's use of it: telling end users apart in abuse reports. Here: the log line.
        log.info("%s: request for end user %r", route, req.user)
    return params


def _top_logprobs(value: int | None, param: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not 0 <= value <= TOP_LOGPROBS_MAX:
        raise _refuse(param, f"must be an integer in [0, {TOP_LOGPROBS_MAX}], got {value!r}", "invalid_request")
    return value


def chat_sampling(req: ChatCompletionRequest, backend: Backend) -> SamplingParams:
    """A chat body's sampling parameters, or the 400 naming the first one that cannot be honoured."""
    params = _common(req, backend, "/v1/chat/completions")
    if req.top_logprobs is not None and not req.logprobs:
        raise _refuse("top_logprobs", "requires logprobs: true", "invalid_request")
    if req.logprobs:
        _needs(backend, "logprobs")
        params.logprobs = _top_logprobs(req.top_logprobs, "top_logprobs")
    fmt = req.response_format
    if fmt is not None and fmt.get("type") != "text":
        raise _refuse(
            "response_format",
            f"type {fmt.get('type')!r} is not supported: the {backend.name} backend cannot constrain output "
            "(to JSON or a schema); only {'type': 'text'} is. vLLM's structured outputs can constrain it, "
            "through vLLM's own OpenAI server",
        )
    if req.tools and req.tool_choice != "none":
        raise _refuse(
            "tools",
            f"tool calling is not supported by this server (the {backend.name} backend does not parse tool calls "
            'out of the output); send no tools, or tool_choice: "none"',
        )
    if req.tool_choice not in (None, "none"):
        raise _refuse("tool_choice", 'only "none" is supported (this server does not call tools)')
    if req.functions and req.function_call != "none":
        raise _refuse("functions", "function calling (the deprecated form of tools) is not supported; leave it out")
    if req.function_call not in (None, "none"):
        raise _refuse("function_call", 'only "none" is supported (this server does not call functions)')
    # parallel_tool_calls only qualifies tool calls, which are refused above: with none, it has nothing to do.
    return params


def completion_sampling(req: CompletionRequest, backend: Backend) -> SamplingParams:
    """A text completion body's sampling parameters, or the 400 naming the first one that cannot be honoured."""
    params = _common(req, backend, "/v1/completions")
    if req.best_of not in (None, 1):
        raise _refuse("best_of", f"only 1 is supported (one candidate per request), got {req.best_of}")
    if req.suffix:
        raise _refuse("suffix", "insertion (text after the completion) is not supported by this server")
    if req.logprobs is not None:
        _needs(backend, "logprobs")
        params.logprobs = _top_logprobs(req.logprobs, "logprobs")
        if req.echo:
            raise _refuse("logprobs", "with echo: true (the prompt's log-probabilities) is not supported")
    return params


# ------------------------------------------------------------------------------------- response shapes


def _lp(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion (or of one chunk of its stream)."""

    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": _lp(logprob), "bytes": list(token.encode("utf-8"))}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """``choices[].logprobs`` of a text completion; ``text_offset`` counts characters of the returned text,
    from ``offset`` (where this chunk starts in a stream)."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    tops: list[dict[str, float]] = []
    for e in entries:
        top: dict[str, float] = {}
        for token, lp in e.top:
            top.setdefault(token, _lp(lp))  # two ids may decode alike: keep the likelier
        tops.append(top)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [_lp(e.logprob) for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }
