"""Presets for any Hugging Face model: ``org/model`` as a preset name, sized from its ``config.json``.

Kaito accepts a Hugging Face id wherever a preset name goes and sizes the model from its config. The
resolver asks the hub (``base_url``, ``https://huggingface.co`` unless ``KAITO_HF_ENDPOINT`` or
``HF_ENDPOINT`` says otherwise) for:

* ``/api/models/<id>``: the commit to pin (``sha``), whether it is gated, the licence, and the
  parameter count of its safetensors (``safetensors.total``) when the hub knows it;
* ``/<id>/resolve/<sha>/config.json``: the architecture, context length, dtype and attention figures.

Without safetensors metadata the parameters are counted from the config (embeddings, attention and
MLP of each layer). The weights then come from the hub at that commit; serving runs under vLLM, on
as many nodes as the memory needs (as Kaito's generated presets do). A preset is cached per id for the
life of the process (it is pinned to a commit); a failure for ``retry_seconds`` only, so a hub that
was down, or a token added later, is asked again.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from kaito_presets.loader import (
    RUNTIME_VLLM,
    WEIGHTS_SOURCE_HUGGINGFACE,
    Attention,
    ModelPreset,
)
from kaito_presets.sizing import serving_gpu_memory

__all__ = ["DEFAULT_HF_ENDPOINT", "HuggingFaceResolver", "preset_from_config"]

DEFAULT_HF_ENDPOINT: Final = "https://huggingface.co"
#: Node disk beyond the weights: the runtime image and scratch (Kaito's SystemFileDiskSizeGiB).
_SYSTEM_DISK: Final = 80 * 2**30
#: Kaito's context for a config that states none (DefaultModelTokenLimit).
_DEFAULT_CONTEXT: Final = 2048
_DTYPE_BYTES: Final = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
                       "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1}


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    value = _first(config, *keys)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _dtype_bytes(config: Mapping[str, Any]) -> int:
    quant = config.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, Mapping) else None
    if isinstance(bits, int) and bits > 0:
        return max(1, bits // 8) if bits >= 8 else 1  # 4-bit weights: count a byte, erring large
    dtype = str(_first(config, "torch_dtype", "dtype") or "bfloat16").removeprefix("torch.")
    return _DTYPE_BYTES.get(dtype, 2)


def _count_parameters(text: Mapping[str, Any], hidden: int, layers: int, *, heads: int, kv_heads: int,
                      head_dim: int) -> int:
    """Embeddings plus, per layer, the q/k/v/o projections and a gated MLP (three matrices)."""
    vocab = _int(text, "vocab_size") or 32000
    intermediate = _int(text, "intermediate_size", "n_inner", "ffn_hidden_size") or 4 * hidden
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp) + embeddings


def preset_from_config(hf_id: str, config: Mapping[str, Any], *, revision: str,
                       info: Mapping[str, Any] | None = None) -> ModelPreset:
    """A preset for ``hf_id`` from its ``config.json`` (and the hub's model ``info``, when known).

    Raises ``ValueError`` naming the config key that is missing.
    """
    info = info or {}
    # Multimodal configs keep the language model's figures in text_config (Gemma 3, Mistral 3).
    text = {**config, **config["text_config"]} if isinstance(config.get("text_config"), Mapping) else dict(config)
    hidden = _int(text, "hidden_size", "n_embd", "d_model")
    layers = _int(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(text, "num_attention_heads", "n_head")
    for key, value in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads)):
        if value is None:
            raise ValueError(f"config.json of {hf_id} has no {key}; it cannot be sized")
    assert hidden is not None and layers is not None and heads is not None
    kv_heads = _int(text, "num_key_value_heads", "n_head_kv", "num_kv_heads") or (
        1 if text.get("multi_query") else heads)
    head_dim = _int(text, "head_dim") or hidden // heads
    attention: dict[str, Any] = {"layers": layers, "kvHeads": kv_heads, "headDim": head_dim}
    rank = _int(text, "kv_lora_rank")
    if rank is not None:
        attention = {"layers": layers, "kvLoraRank": rank, "qkRopeHeadDim": _int(text, "qk_rope_head_dim") or 0}
    safetensors = info.get("safetensors")
    total = safetensors.get("total") if isinstance(safetensors, Mapping) else None
    parameters = total if isinstance(total, int) and total > 0 else _count_parameters(
        text, hidden, layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    weights = parameters * _dtype_bytes(text)
    architectures = config.get("architectures")
    card = info.get("cardData")
    license_ = card.get("license") if isinstance(card, Mapping) else None
    data: dict[str, Any] = {
        "name": hf_id, "family": "huggingface", "huggingfaceId": hf_id, "revision": revision,
        "weights": {"source": WEIGHTS_SOURCE_HUGGINGFACE, "tag": "hf"},
        "source": f"{DEFAULT_HF_ENDPOINT}/{hf_id}",
        "architecture": architectures[0] if isinstance(architectures, list) and architectures else "unknown",
        "parameters": f"{parameters / 1e9:.2f}B", "license": str(license_ or "unknown"),
        "gated": info.get("gated") not in (None, False),
        "weightsSize": weights,
        "contextLength": _int(text, "max_position_embeddings", "n_positions", "max_sequence_length",
                              "seq_length") or _DEFAULT_CONTEXT,
        "runtimes": [RUNTIME_VLLM], "distributedInference": True,
        "attention": attention,
    }
    kv_bytes = Attention.model_validate(attention).kv_bytes_per_token
    data["inference"] = {"gpuMemory": serving_gpu_memory(weights, kv_bytes), "gpuCount": 1,
                         "disk": math.ceil((weights + _SYSTEM_DISK) / 2**30) * 2**30}
    return ModelPreset.model_validate(data)


class HuggingFaceResolver:
    """Resolves ``org/model`` to a sized preset through the hub at ``base_url`` (cached per id)."""

    def __init__(self, base_url: str = DEFAULT_HF_ENDPOINT, *, token: str | None = None, timeout: float = 10.0,
                 retry_seconds: float = 60.0):
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"Hugging Face endpoint {base_url!r} is not an http(s) URL; "
                             "set KAITO_HF_ENDPOINT like https://huggingface.co")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._cache: dict[str, ModelPreset | str] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> HuggingFaceResolver:
        base = os.environ.get("KAITO_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
        return cls(base, token=os.environ.get("HF_TOKEN") or None)

    def __call__(self, hf_id: str) -> ModelPreset | None:
        found = self.resolve(hf_id)
        return found if isinstance(found, ModelPreset) else None

    def reason(self, hf_id: str) -> str | None:
        """Why ``hf_id`` could not be made a preset (None if it was, or was never asked)."""
        found = self._cache.get(hf_id)
        return found if isinstance(found, str) else None

    def resolve(self, hf_id: str) -> ModelPreset | str:
        """The preset, or a sentence saying why there is none."""
        with self._lock:
            stale = time.monotonic() - self._failed_at.get(hf_id, math.inf) > self.retry_seconds
            if hf_id not in self._cache or stale:
                found = self._cache[hf_id] = self._resolve(hf_id)
                self._failed_at.pop(hf_id, None)
                if isinstance(found, str):
                    self._failed_at[hf_id] = time.monotonic()
            return self._cache[hf_id]

    def _resolve(self, hf_id: str) -> ModelPreset | str:
        org, _, model = hf_id.partition("/")
        if not org or not model or "/" in model:
            return f"{hf_id!r} is not a Hugging Face id (write it as org/model)"
        quoted = f"{urllib.parse.quote(org)}/{urllib.parse.quote(model)}"
        try:
            info = self._get(f"{self.base_url}/api/models/{quoted}")
            sha = info.get("sha") if isinstance(info, Mapping) else None
            if not isinstance(sha, str):
                return f"the hub at {self.base_url} gave no commit for {hf_id}"
            config = self._get(f"{self.base_url}/{quoted}/resolve/{sha}/config.json")
            if not isinstance(config, Mapping):
                return f"config.json of {hf_id} is not a JSON object"
            preset = preset_from_config(hf_id, config, revision=sha, info=info)
        except urllib.error.HTTPError as exc:
            hint = "; it is gated: give the operator a Hugging Face token (HF_TOKEN)" if exc.code in (401, 403) else ""
            return f"the hub at {self.base_url} answered {exc.code} for {hf_id}{hint}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return f"cannot reach the Hugging Face hub at {self.base_url} for {hf_id}: {exc}"
        except (ValueError, ValidationError) as exc:
            return f"cannot size {hf_id} from its config.json: {exc}"
        return preset

    def _get(self, url: str) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # the base is checked to be http(s)
            return json.loads(answer.read().decode("utf-8"))
