"""Pure request -> generation translation: ``/chat``'s generate_kwargs and the token budget (the OpenAI
fields: ``openai_params.py``).

Nothing here touches the model, the network or the event loop; every refusal is an :class:`RequestError`.
"""

from __future__ import annotations

import logging
from typing import Any

from .base import SamplingParams
from .errors import RequestError
from .schemas import SEED_MAX, SEED_MIN, ChatRequest

log = logging.getLogger("kaito.inference.server")

__all__ = [
    "GEN_KEYS",
    "IGNORED_KEYS",
    "chat_kwargs",
    "opt_float",
    "opt_int",
    "sampling_from_kwargs",
    "token_budget",
]

# generate_kwargs understood by /chat (``stop_strings`` is transformers' spelling of ``stop``).
GEN_KEYS = frozenset(
    {
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
)
# What Kaito's transformers runtime passed on to the HF text-generation pipeline and ``generate`` but that has
# no meaning here: accepted and ignored, with one log line per request naming them.
IGNORED_KEYS = frozenset(
    {
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
)
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


def chat_kwargs(req: ChatRequest) -> dict[str, Any]:
    """/chat's generation options: ``generate_kwargs`` plus those sent at the top level (Kaito takes both),
    checked (unknown keys and other response shapes refused), ``stop_strings`` spelled ``stop``."""
    kwargs: dict[str, Any] = dict(req.generate_kwargs or {})
    for key, value in (req.model_extra or {}).items():
        kwargs.setdefault(key, value)
    unknown = sorted(set(kwargs) - GEN_KEYS - IGNORED_KEYS)
    if unknown:
        raise RequestError(
            400,
            f"unsupported generate_kwargs {unknown}; supported: {sorted(GEN_KEYS)} "
            "(other transformers pipeline/generate options are accepted and ignored)",
            "invalid_generate_kwargs",
        )
    for key, default in _SHAPE_DEFAULTS.items():
        if kwargs.get(key) not in (None, default):
            raise RequestError(
                400,
                f"{key}={kwargs[key]!r} is not supported by this server (only {default!r}: one text result)",
                "invalid_generate_kwargs",
            )
    ignored = sorted(k for k in set(kwargs) & IGNORED_KEYS if k != "return_full_text")
    if ignored:
        log.info("/chat: ignoring generate_kwargs with no effect on this runtime: %s", ", ".join(ignored))
    if "stop_strings" in kwargs:
        if "stop" in kwargs:
            raise RequestError(400, "give stop or stop_strings, not both", "invalid_generate_kwargs")
        kwargs["stop"] = kwargs.pop("stop_strings")
    return kwargs


def opt_int(kwargs: dict[str, Any], key: str) -> int | None:
    """A positive integer option, or None when absent."""
    value = kwargs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"{key} must be a positive integer, got {value!r}", "invalid_generate_kwargs")
    return value


def opt_float(kwargs: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    """A number option in ``[lo, hi]``."""
    value = kwargs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise RequestError(400, f"{key} must be a number in [{lo}, {hi}], got {value!r}", "invalid_generate_kwargs")
    return float(value)


def _seed(kwargs: dict[str, Any]) -> int | None:
    seed = kwargs.get("seed")
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RequestError(400, "seed must be an integer", "invalid_generate_kwargs")
    if not SEED_MIN <= seed <= SEED_MAX:
        raise RequestError(
            400, f"seed must be a 64-bit integer in [{SEED_MIN}, {SEED_MAX}], got {seed}", "invalid_generate_kwargs"
        )
    return seed


def sampling_from_kwargs(kwargs: dict[str, Any]) -> SamplingParams:
    """/chat's options as sampling parameters (``max_new_tokens`` is set later, by the budget)."""
    stop = kwargs.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise RequestError(400, "stop must be a string or a list of strings", "invalid_generate_kwargs")
    do_sample = kwargs.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):
        raise RequestError(400, "do_sample must be a boolean", "invalid_generate_kwargs")
    top_k = kwargs.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise RequestError(400, "top_k must be a non-negative integer", "invalid_generate_kwargs")
    seed = _seed(kwargs)
    rp = kwargs.get("repetition_penalty")
    return SamplingParams(
        max_new_tokens=1,
        temperature=opt_float(kwargs, "temperature", 1.0, 0.0, 100.0),
        top_p=opt_float(kwargs, "top_p", 1.0, 0.0, 1.0),
        top_k=top_k or None,
        do_sample=do_sample,
        repetition_penalty=None if rp is None else opt_float(kwargs, "repetition_penalty", 1.0, 1e-6, 100.0),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        seed=seed,
    )


def token_budget(
    n_prompt: int,
    context: int,
    requested: int | None,
    *,
    default: int,
    limit: int,
    max_length: int | None = None,
) -> int:
    """The completion's max new tokens for a prompt of ``n_prompt`` tokens, or an :class:`RequestError`.

    ``context`` is the model's prompt-plus-completion length, ``requested`` the max tokens the request asks
    for (None: ``default``, clamped to what the context leaves), ``limit`` the server's cap on it, and
    ``max_length`` the HF pipeline's prompt-plus-completion cap (clamped, as the pipeline does).
    """
    if n_prompt >= context:
        raise RequestError(
            400,
            f"prompt is {n_prompt} tokens; this model's context is {context} tokens (prompt plus completion)",
            "context_length_exceeded",
        )
    if max_length is not None:
        if max_length - n_prompt < 1:
            raise RequestError(
                400,
                f"max_length {max_length} leaves no room after the {n_prompt}-token prompt",
                "context_length_exceeded",
            )
        # As in the HF pipeline, max_length (prompt plus completion) is a cap, not a demand: it is clamped
        # to this server's limits (Kaito's documented /chat body sends max_length 200).
        requested = min(max_length - n_prompt, limit, context - n_prompt)
    if requested is not None and requested > limit:
        raise RequestError(
            400, f"max tokens {requested} exceeds this server's limit of {limit}", "max_tokens_exceeded"
        )
    if requested is None:
        return min(default, context - n_prompt)
    if n_prompt + requested > context:
        raise RequestError(
            400,
            f"prompt ({n_prompt} tokens) plus max tokens ({requested}) exceeds this model's "
            f"context of {context} tokens",
            "context_length_exceeded",
        )
    return requested
