"""Request bodies: Kaito's ``/chat`` and the OpenAI ones.

``/chat`` allows unknown fields (Kaito's clients send HF pipeline options; ``sampling.chat_kwargs`` sorts
them). The OpenAI bodies forbid them: a parameter this server does not know is a 400 naming it, never
silently dropped (``errors.py`` words it); those it knows but cannot honour are refused by ``openai_params``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import RequestError

__all__ = [
    "SEED_MAX",
    "SEED_MIN",
    "TOP_LOGPROBS_MAX",
    "ChatCompletionRequest",
    "ChatRequest",
    "CompletionRequest",
    "ContentPart",
    "Message",
    "OpenAIRequest",
]

#: A ``seed`` is a signed 64-bit integer (torch's and vLLM's range); outside it the request is a 400.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1
#: The most alternatives per token ``top_logprobs`` (chat) and ``logprobs`` (completions) may ask for (vLLM's
#: default ``max_logprobs``; OpenAI's chat limit).
TOP_LOGPROBS_MAX = 20


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    # Passed to the chat template as sent (templates that know them render them; a past tool call in the
    # history is text to the model, not a tool this server runs).
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise RequestError(400, "only text content parts are supported", "unsupported_content")
            content = "".join(p.text or "" for p in content)
        out: dict[str, Any] = {"role": self.role, "content": content or ""}
        for key in ("name", "tool_call_id", "tool_calls"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class ChatRequest(BaseModel):
    """Kaito's /chat body (the seed's curl sends just ``{"prompt": ...}``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    prompt: str | None = None
    messages: list[Message] | None = None
    generate_kwargs: dict[str, Any] | None = None
    model: str | None = None
    return_full_text: bool = True


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class OpenAIRequest(BaseModel):
    """What the OpenAI chat and text completion bodies share (``top_k`` and ``repetition_penalty`` are
    vLLM's extensions). ``None`` is the default wherever OpenAI allows ``null``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    #: Token id (a string, as JSON keys are) -> a bias in [-100, 100] added to its logit.
    logit_bias: dict[str, float] | None = None
    #: The end user, for abuse tracking: logged with the request.
    user: str | None = None


class ChatCompletionRequest(OpenAIRequest):
    messages: list[Message]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str]
    echo: bool | None = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
