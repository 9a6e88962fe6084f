"""Request bodies: Kaito's ``/chat`` and the OpenAI ones. Unknown fields are allowed (clients send more)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError

__all__ = [
    "SEED_MAX",
    "SEED_MIN",
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


class OpenAIRequest(BaseModel):
    """What the OpenAI chat and text completion bodies share."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    repetition_penalty: float | None = Field(None, gt=0)


class ChatCompletionRequest(OpenAIRequest):
    messages: list[Message]
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str]
    echo: bool = False
