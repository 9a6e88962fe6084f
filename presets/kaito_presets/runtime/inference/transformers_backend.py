"""The transformers backend: runs anywhere torch runs (CPU included), adapters combined with peft."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..adapters import AdapterSpec, apply_adapters, discover_adapters
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


_Item = tuple[list[int], list[TokenLogprob] | None]


class _QueueStreamer:
    """A transformers streamer that hands new token ids to an asyncio queue (skipping the prompt), with their
    log-probabilities when a :class:`_LogprobRecorder` records them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[_Item | None],
        recorder: _LogprobRecorder | None = None,
    ) -> None:
        self._loop, self._queue, self._prompt_seen, self.recorder = loop, queue, False, recorder

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = [int(x) for x in value.reshape(-1).tolist()]
        entries = self.recorder.entries(ids) if self.recorder is not None else None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (ids, entries))

    def end(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


class _LogprobRecorder:
    """Keeps each step's log-softmax of the model's raw logits (it runs first among the logits processors,
    before temperature, top-p/top-k, penalties and logit_bias, as vLLM's default ``raw_logprobs``); the
    streamer pairs each step with the token chosen at it (steps and tokens come in the same order)."""

    def __init__(self, tokenizer: Any, top: int) -> None:
        self._tokenizer, self._top = tokenizer, top
        self._steps: collections.deque[Any] = collections.deque()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self._steps.append(torch.log_softmax(scores[0].float(), dim=-1))
        return scores

    def _token(self, token_id: int) -> str:
        return str(self._tokenizer.decode([token_id], skip_special_tokens=False))

    def entries(self, ids: list[int]) -> list[TokenLogprob]:
        import torch

        out = []
        for token_id in ids:
            row = self._steps.popleft()
            top: list[tuple[str, float]] = []
            if self._top:
                values, indices = torch.topk(row, self._top)
                top = [(self._token(int(i)), float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]
            out.append(TokenLogprob(self._token(token_id), float(row[token_id]), top))
        return out


class _Penalties:
    """OpenAI's presence and frequency penalties over the tokens generated so far, and ``logit_bias``."""

    def __init__(self, prompt_len: int, params: SamplingParams) -> None:
        self._prompt_len = prompt_len
        self._presence, self._frequency = params.presence_penalty, params.frequency_penalty
        self._bias = params.logit_bias

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.clone()
        if self._bias:
            ids = torch.tensor(list(self._bias), device=scores.device)
            scores[:, ids] += torch.tensor(list(self._bias.values()), device=scores.device, dtype=scores.dtype)
        generated = input_ids[:, self._prompt_len :]
        if generated.shape[1] and (self._presence or self._frequency):
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            scores -= self._frequency * counts + self._presence * (counts > 0).to(scores.dtype)
        return scores


class TransformersBackend(Backend):
    name = "transformers"
    honours = frozenset({"logprobs", "presence_penalty", "frequency_penalty", "logit_bias"})

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
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            StoppingCriteria,
            StoppingCriteriaList,
        )

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
            # Ours run in this order, after the model's own defaults and before temperature / top-p / top-k:
            # the recorder first (raw logits), then the penalties.
            processors: list[Any] = []
            if streamer.recorder is not None:
                processors.append(streamer.recorder)
            if params.repetition_penalty is not None:
                kwargs["repetition_penalty"] = 1.0  # the built-in one would run before the recorder
                processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
            if params.presence_penalty or params.frequency_penalty or params.logit_bias:
                processors.append(_Penalties(len(ids), params))
            if processors:
                kwargs["logits_processor"] = LogitsProcessorList(processors)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except Exception:
            log.exception("generation failed")
            streamer.end()
            raise

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _tokens_in(self, out: list[int], n_chars: int, *, covering: bool) -> int:
        """How many of ``out``'s tokens make up its first ``n_chars`` characters: with ``covering``, the fewest
        whose text reaches ``n_chars``; else the most whose text fits in it, less trailing ones without text."""
        lo, hi = 0, len(out)
        if covering:  # the smallest k with len(decode(out[:k])) >= n_chars
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (mid + 1, hi) if len(self._decode(out[:mid])) < n_chars else (lo, mid)
            return lo
        while lo < hi:  # the largest k with len(decode(out[:k])) <= n_chars
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if len(self._decode(out[:mid])) <= n_chars else (lo, mid - 1)
        while lo > 0 and len(self._decode(out[: lo - 1])) == len(self._decode(out[:lo])):
            lo -= 1
        return lo

    def _check_bias(self, params: SamplingParams) -> None:
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        bad = sorted(t for t in params.logit_bias if t >= vocab)
        if bad:
            raise BackendError(
                f"logit_bias: token ids {bad} are not in this model's vocabulary (size {vocab})", param="logit_bias"
            )

    async def stream(
        self, model: str, prompt: str, params: SamplingParams, *, add_special_tokens: bool
    ) -> AsyncIterator[Delta]:
        if self.model is None:
            raise BackendError("model is not loaded yet", status=503, code="model_loading")
        if params.logit_bias:
            self._check_bias(params)
        if self._lock is None:
            self._lock = asyncio.Lock()
        ids = await asyncio.to_thread(self._encode, prompt, add_special_tokens)  # never on the event loop
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        holdback = max((len(s) for s in params.stop), default=1) - 1
        want_lp = params.logprobs is not None
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[_Item | None] = asyncio.Queue()
            cancel = threading.Event()
            recorder = _LogprobRecorder(self.tokenizer, params.logprobs or 0) if want_lp else None
            streamer = _QueueStreamer(loop, queue, recorder)
            task = loop.run_in_executor(None, self._generate_blocking, ids, params, streamer, cancel)
            out: list[int] = []
            entries: list[TokenLogprob] = []
            sent = sent_tokens = 0
            stopped = False
            text = ""
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    out.extend(item[0])
                    entries.extend(item[1] or [])
                    if stopped:
                        continue
                    text = self._decode(out)
                    text, stopped = truncate_at_stop(text, params.stop)
                    if stopped:
                        cancel.set()
                    if text.endswith("\ufffd"):
                        continue  # an incomplete multi-byte character: wait for the rest
                    safe = len(text) if stopped else max(sent, len(text) - holdback)
                    if safe > sent:
                        lps = None
                        if want_lp:  # the tokens whose text is all sent by now
                            upto = max(sent_tokens, self._tokens_in(out, safe, covering=False))
                            lps, sent_tokens = entries[sent_tokens:upto], upto
                        yield Delta(text[sent:safe], logprobs=lps)
                        sent = safe
                await task  # re-raise a generation error
            finally:
                cancel.set()
                with contextlib.suppress(Exception):
                    await task
        text = self._decode(out)
        text, hit_stop = truncate_at_stop(text, params.stop)
        ended_eos = bool(out) and out[-1] in eos_ids
        finish: FinishReason = "stop" if hit_stop or ended_eos or len(out) < params.max_new_tokens else "length"
        done = Completion(text=text, prompt_tokens=len(ids), completion_tokens=len(out), finish_reason=finish)
        last = None
        if want_lp:  # the tokens of the returned text; those past a stop string, and a final EOS, are not
            kept = self._tokens_in(out, len(text), covering=True)
            done.logprobs = entries[:kept]
            last = entries[sent_tokens : max(kept, sent_tokens)]
        yield Delta(text[sent:], done=done, logprobs=last)
