"""The small interface every inference backend implements (transformers, vLLM)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


class BackendError(Exception):
    """A request the backend cannot serve; ``status`` is the HTTP status the server answers."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param  # the request field at fault, when one is


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    do_sample: bool | None = None  # None: sample iff temperature > 0
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    #: None: no log-probabilities; k >= 0: each generated token's, with its k most likely alternatives.
    logprobs: int | None = None
    # OpenAI's penalties on tokens already generated (each occurrence / once), and a bias per token id.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def sampling(self) -> bool:
        return self.do_sample if self.do_sample is not None else self.temperature > 0


@dataclass
class TokenLogprob:
    """One generated token's log-probability under the model, with the most likely alternatives at its step
    (``top``, most likely first; as many as ``SamplingParams.logprobs`` asked for)."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    #: One entry per token of ``text`` when logprobs were asked for (tokens cut off by a stop string are not).
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Delta:
    """One streamed piece: new text, and on the last one the whole completion."""

    text: str
    done: Completion | None = None
    #: The tokens ``text`` is made of, when logprobs were asked for.
    logprobs: list[TokenLogprob] | None = None


class Backend(abc.ABC):
    """Loads a model and generates from it. ``load``, ``apply_chat_template`` and ``count_tokens`` may block
    (the server calls them in a worker thread); ``stream`` is called on the event loop."""

    name: str = "abstract"
    #: Generations the server admits at once (running or waiting) unless ``max_pending_requests`` says.
    max_pending: int = 16
    #: The OpenAI request parameters beyond the basic sampling ones that this backend honours; the server
    #: refuses a non-default value of any other with a 400 naming it (see ``openai_params.py``).
    honours: frozenset[str] = frozenset()

    @property
    @abc.abstractmethod
    def model_names(self) -> list[str]:
        """The served model names (the first is the default)."""

    @property
    @abc.abstractmethod
    def max_model_len(self) -> int:
        """Prompt plus completion tokens one request may use."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights, tokenizer and adapters (blocking; run in a thread by the server)."""

    async def start(self) -> None:
        """Load on the server's event loop; by default ``load`` in a worker thread."""
        await asyncio.to_thread(self.load)

    @abc.abstractmethod
    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """Render chat messages (with the generation prompt) to the prompt text."""

    @abc.abstractmethod
    def count_tokens(self, prompt: str, *, add_special_tokens: bool) -> int:
        """Tokens the prompt takes."""

    @abc.abstractmethod
    def stream(
        self, model: str, prompt: str, params: SamplingParams, *, add_special_tokens: bool
    ) -> AsyncIterator[Delta]:
        """Generate; yield text deltas, the last one carrying ``done``."""

    async def generate(
        self, model: str, prompt: str, params: SamplingParams, *, add_special_tokens: bool
    ) -> Completion:
        async for delta in self.stream(model, prompt, params, add_special_tokens=add_special_tokens):
            if delta.done is not None:
                return delta.done
        raise BackendError("generation ended without a result", status=500, code="internal_error")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (optional)."""


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_backend(config: Any) -> Backend:
    """Instantiate the backend named by ``config.backend`` (vLLM imported only when selected)."""
    if config.backend == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(config)
    if config.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(config)
    raise ValueError(f"unknown backend {config.backend!r}")
