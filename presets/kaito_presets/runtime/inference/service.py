"""What the routes ask of the model: readiness, names, admission, the token budget and generation.

The blocking steps (the chat template, tokenization) run in a worker thread, so a huge prompt never
stalls the event loop, and with it ``/health``; generation itself is the backend's (its own thread or
engine). Metrics are recorded here, once per generation, whichever wire format asked for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from .base import Backend, Completion, Delta, SamplingParams
from .config import InferenceConfig
from .errors import RequestError
from .limits import Admission, Slot
from .metrics import InferenceMetrics
from .sampling import token_budget

__all__ = ["InferenceService", "ServerState"]


class ServerState:
    """Whether the model is loaded, or why it failed to (``/health`` reports it)."""

    def __init__(self) -> None:
        self.ready = False
        self.error: str | None = None


class InferenceService:
    def __init__(self, backend: Backend, config: InferenceConfig, metrics: InferenceMetrics) -> None:
        self.backend, self.config, self.metrics = backend, config, metrics
        self.state = ServerState()
        self.admission = Admission(config.max_pending_requests or backend.max_pending, metrics.pending)

    async def load(self) -> None:
        """Load the model; a failure is kept for ``/health`` (the pod's probes restart it)."""
        await self.backend.start()
        self.state.ready = True
        self.metrics.loaded.set(1)

    def ensure_ready(self) -> None:
        if not self.state.ready:
            err = self.state.error
            msg = "model failed to load: " + err if err else "model is still loading"
            raise RequestError(503, msg, "model_not_ready", "server_error")

    def resolve_model(self, name: str | None) -> str:
        names = self.backend.model_names
        if name is None or name == "":
            return names[0]
        if name not in names:
            raise RequestError(404, f"model {name!r} not found; served models: {', '.join(names)}", "model_not_found")
        return name

    def models(self) -> list[dict[str, Any]]:
        created = int(time.time())
        return [
            {"id": n, "object": "model", "created": created, "owned_by": "kaito", "root": self.config.model}
            for n in self.backend.model_names
        ]

    def admit(self) -> Slot:
        """A slot in the bounded generation queue (429 when it is full)."""
        return self.admission.admit()

    async def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        return await asyncio.to_thread(self.backend.apply_chat_template, messages)

    async def max_new_tokens(
        self, prompt: str, add_special: bool, requested: int | None, max_length: int | None = None
    ) -> int:
        """Count the prompt's tokens (in a thread) and check them against the limits, before any generation."""
        n_prompt = await asyncio.to_thread(self.backend.count_tokens, prompt, add_special_tokens=add_special)
        cfg = self.config
        return token_budget(
            n_prompt,
            self.backend.max_model_len,
            requested,
            default=cfg.max_new_tokens,
            limit=cfg.max_new_tokens_limit,
            max_length=max_length,
        )

    async def stream(
        self, route: str, model: str, prompt: str, params: SamplingParams, add_special: bool
    ) -> AsyncIterator[Delta]:
        m = self.metrics
        t0 = time.perf_counter()
        first = True
        m.running.inc()
        try:
            async for delta in self.backend.stream(model, prompt, params, add_special_tokens=add_special):
                if first and (delta.text or delta.done):
                    m.ttft.labels(route).observe(time.perf_counter() - t0)
                    first = False
                if delta.done is not None:
                    m.prompt_tokens.labels(model).inc(delta.done.prompt_tokens)
                    m.generation_tokens.labels(model).inc(delta.done.completion_tokens)
                yield delta
        finally:
            m.running.dec()
            m.latency.labels(route).observe(time.perf_counter() - t0)

    async def generate(
        self, route: str, model: str, prompt: str, params: SamplingParams, add_special: bool
    ) -> Completion:
        async for delta in self.stream(route, model, prompt, params, add_special):
            if delta.done is not None:
                return delta.done
        raise RequestError(500, "generation ended without a result", "internal_error", "server_error")
