"""The transformers backend: runs anywhere torch runs (CPU included), adapters combined with peft."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..adapters import AdapterSpec, apply_adapters, discover_adapters
from .base import Backend, BackendError, Completion, Delta, FinishReason, SamplingParams, truncate_at_stop
from .config import InferenceConfig

log = logging.getLogger("kaito.inference.transformers")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def resolve_chat_template(value: str | None) -> str | None:
    """A Jinja template inline, or a path to a file holding one."""
    if not value:
        return None
    if any(c in value for c in "{}\n"):
        return value
    return Path(value).read_text()


class _QueueStreamer:
    """A transformers streamer that hands new token ids to an asyncio queue (skipping the prompt)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[list[int] | None]) -> None:
        self._loop, self._queue, self._prompt_seen = loop, queue, False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = [int(x) for x in value.reshape(-1).tolist()]
        self._loop.call_soon_threadsafe(self._queue.put_nowait, ids)

    def end(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, config: InferenceConfig) -> None:
        self.config = config
        self.model: Any = None
        self.tokenizer: Any = None
        self.adapters: list[AdapterSpec] = []
        self._max_len = config.max_model_len or 0
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------------------------ loading

    @property
    def model_names(self) -> list[str]:
        return [self.config.model_name]

    @property
    def max_model_len(self) -> int:
        return self._max_len

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg, opts = self.config, self.config.transformers
        tokenizer = AutoTokenizer.from_pretrained(
            cfg.model, local_files_only=True, trust_remote_code=opts.trust_remote_code
        )
        template = resolve_chat_template(opts.chat_template)
        if template:
            tokenizer.chat_template = template
        dtype: Any = "auto" if cfg.dtype == "auto" else getattr(torch, _DTYPES.get(cfg.dtype, cfg.dtype), None)
        if dtype is None:
            raise ValueError(f"unknown dtype {cfg.dtype!r}")
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "trust_remote_code": opts.trust_remote_code}
        if opts.device_map and (opts.device_map != "auto" or torch.cuda.is_available()):
            kwargs["device_map"] = opts.device_map
        model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
        self.adapters = discover_adapters(cfg.adapters_dir)
        model = apply_adapters(model, self.adapters, opts.combination_type)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model_limit = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self._max_len = min(cfg.max_model_len or model_limit, model_limit)
        self.model, self.tokenizer = model, tokenizer
        log.info(
            "loaded %s (max_model_len %d, adapters: %s)",
            cfg.model,
            self._max_len,
            [a.name for a in self.adapters] or "none",
        )

    # --------------------------------------------------------------------------------- generation

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template error is the request's fault (bad roles, ...)
            raise BackendError(f"cannot apply the chat template to these messages: {exc}") from exc
        return str(text)

    def _encode(self, prompt: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])

    def count_tokens(self, prompt: str, *, add_special_tokens: bool) -> int:
        return len(self._encode(prompt, add_special_tokens))

    def _generate_blocking(
        self, ids: list[int], params: SamplingParams, streamer: _QueueStreamer, cancel: threading.Event
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        try:
            device = self.model.device
            input_ids = torch.tensor([ids], device=device)
            kwargs: dict[str, Any] = {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "max_new_tokens": params.max_new_tokens,
                "do_sample": params.sampling,
                "pad_token_id": self.tokenizer.pad_token_id,
                "streamer": streamer,
                "stopping_criteria": StoppingCriteriaList([_Cancel()]),
            }
            if params.sampling:
                kwargs.update(temperature=max(params.temperature, 1e-5), top_p=params.top_p)
                if params.top_k is not None:
                    kwargs["top_k"] = params.top_k
            else:  # greedy: silence the model's sampling defaults
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if params.repetition_penalty is not None:
                kwargs["repetition_penalty"] = params.repetition_penalty
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except Exception:
            log.exception("generation failed")
            streamer.end()
            raise

    async def stream(
        self, model: str, prompt: str, params: SamplingParams, *, add_special_tokens: bool
    ) -> AsyncIterator[Delta]:
        if self.model is None:
            raise BackendError("model is not loaded yet", status=503, code="model_loading")
        if self._lock is None:
            self._lock = asyncio.Lock()
        ids = await asyncio.to_thread(self._encode, prompt, add_special_tokens)  # never on the event loop
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        holdback = max((len(s) for s in params.stop), default=1) - 1
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
            cancel = threading.Event()
            streamer = _QueueStreamer(loop, queue)
            task = loop.run_in_executor(None, self._generate_blocking, ids, params, streamer, cancel)
            out: list[int] = []
            sent = 0
            stopped = False
            text = ""
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    out.extend(item)
                    if stopped:
                        continue
                    text = self.tokenizer.decode(out, skip_special_tokens=True)
                    text, stopped = truncate_at_stop(text, params.stop)
                    if stopped:
                        cancel.set()
                    if text.endswith("\ufffd"):
                        continue  # an incomplete multi-byte character: wait for the rest
                    safe = len(text) if stopped else max(sent, len(text) - holdback)
                    if safe > sent:
                        yield Delta(text[sent:safe])
                        sent = safe
                await task  # re-raise a generation error
            finally:
                cancel.set()
                with contextlib.suppress(Exception):
                    await task
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        text, hit_stop = truncate_at_stop(text, params.stop)
        ended_eos = bool(out) and out[-1] in eos_ids
        finish: FinishReason = "stop" if hit_stop or ended_eos or len(out) < params.max_new_tokens else "length"
        done = Completion(text=text, prompt_tokens=len(ids), completion_tokens=len(out), finish_reason=finish)
        yield Delta(text[sent:], done=done)
