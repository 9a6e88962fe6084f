"""The vLLM backend (GPU). Imported only when ``backend: vllm`` is selected; never on CPU test machines.

Each adapter under ``/mnt/adapter/<name>`` becomes its own served model name (a vLLM ``LoRARequest``);
vLLM does not blend adapters, so strengths do not apply here (a strength of 0 leaves the adapter out).
Log-probabilities, the presence/frequency penalties and ``logit_bias`` go to vLLM's own ``SamplingParams``.
Extra engine arguments come from the ``vllm:`` section of the inference ConfigMap.

NOT exercised by the test suite (no GPU in CI); written against vLLM's ``AsyncLLMEngine`` API.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..adapters import AdapterSpec, discover_adapters
from .base import (
    Backend,
    BackendError,
    Completion,
    Delta,
    FinishReason,
    SamplingParams,
    TokenLogprob,
    truncate_at_stop,
)
from .config import InferenceConfig

log = logging.getLogger("kaito.inference.vllm")


class VLLMBackend(Backend):
    name = "vllm"
    max_pending = 256  # vLLM batches what it is given
    honours = frozenset({"logprobs", "presence_penalty", "frequency_penalty", "logit_bias"})

    def __init__(self, config: InferenceConfig) -> None:
        self.config = config
        self.engine: Any = None
        self.tokenizer: Any = None
        self.adapters: list[AdapterSpec] = []
        self._lora: dict[str, Any] = {}
        self._max_len = config.max_model_len or 0

    @property
    def model_names(self) -> list[str]:
        return [self.config.model_name, *self._lora]

    @property
    def max_model_len(self) -> int:
        return self._max_len

    def load(self) -> None:  # pragma: no cover - the engine is built on the event loop in start()
        raise NotImplementedError("VLLMBackend loads in start()")

    async def start(self) -> None:  # pragma: no cover - needs a GPU
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        cfg = self.config
        self.adapters = [a for a in discover_adapters(cfg.adapters_dir) if a.strength != 0]
        extra = {k.replace("-", "_"): v for k, v in cfg.vllm.items()}
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "served_model_name": cfg.model_name,
            "dtype": cfg.dtype,
            "trust_remote_code": cfg.transformers.trust_remote_code,
        }
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if self.adapters:
            kwargs["enable_lora"] = True
            kwargs.setdefault("max_loras", max(1, len(self.adapters)))
        kwargs.update(extra)
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**kwargs))
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
        self._lora = {a.name: LoRARequest(a.name, i + 1, str(a.path)) for i, a in enumerate(self.adapters)}
        model_cfg = await self.engine.get_model_config()
        self._max_len = int(model_cfg.max_model_len)
        log.info("vLLM engine ready: %s (max_model_len %d, adapters %s)", cfg.model, self._max_len, list(self._lora))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        try:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception as exc:
            raise BackendError(f"cannot apply the chat template to these messages: {exc}") from exc

    def count_tokens(self, prompt: str, *, add_special_tokens: bool) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])

    async def stream(  # pragma: no cover - needs a GPU
        self, model: str, prompt: str, params: SamplingParams, *, add_special_tokens: bool
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams as VSamplingParams

        if self.engine is None:
            raise BackendError("model is not loaded yet", status=503, code="model_loading")
        sp = VSamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.sampling else 0.0,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k is not None else -1,
            repetition_penalty=params.repetition_penalty or 1.0,
            stop=params.stop or None,
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=params.logit_bias or None,
            logprobs=params.logprobs,
        )
        ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        request_id = uuid.uuid4().hex
        sent, sent_lp, final = 0, 0, None
        async for out in self.engine.generate(
            {"prompt_token_ids": ids}, sp, request_id, lora_request=self._lora.get(model)
        ):
            choice = out.outputs[0]
            text = choice.text
            if len(text) > sent:
                lps = None
                if params.logprobs is not None:
                    steps = (choice.logprobs or [])[sent_lp:]  # cumulative outputs: only the new steps
                    lps = self._logprobs(choice.token_ids[sent_lp:], steps, params.logprobs)
                    sent_lp += len(lps)
                yield Delta(text[sent:], logprobs=lps)
                sent = len(text)
            final = out
        if final is None:
            raise BackendError("vLLM returned no output", status=500, code="internal_error")
        choice = final.outputs[0]
        text, _ = truncate_at_stop(choice.text, params.stop)
        finish: FinishReason = "length" if choice.finish_reason == "length" else "stop"
        done = Completion(text, len(ids), len(choice.token_ids), finish)
        last = None
        if params.logprobs is not None:
            done.logprobs = self._logprobs(choice.token_ids, choice.logprobs, params.logprobs)
            last = done.logprobs[sent_lp:]
        yield Delta("", done=done, logprobs=last)

    def _logprobs(self, token_ids: Any, steps: Any, top: int) -> list[TokenLogprob]:  # pragma: no cover
        """vLLM's per-step ``{token_id: Logprob}`` (the chosen token always among them) as ours."""

        def text(tid: int, lp: Any) -> str:
            return lp.decoded_token if lp.decoded_token is not None else str(self.tokenizer.decode([tid]))

        out = []
        for token_id, step in zip(token_ids, steps or [], strict=False):
            ranked = sorted(step.items(), key=lambda kv: kv[1].logprob, reverse=True)[:top]
            chosen = step[token_id]
            out.append(
                TokenLogprob(text(token_id, chosen), chosen.logprob, [(text(t, lp), lp.logprob) for t, lp in ranked])
            )
        return out

    def close(self) -> None:  # pragma: no cover
        if self.engine is not None and hasattr(self.engine, "shutdown"):
            self.engine.shutdown()
