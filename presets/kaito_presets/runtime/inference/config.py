"""Inference server configuration: the mounted ConfigMap (YAML) overlaid by CLI flags.

ConfigMap key ``inference_config.yaml``, mounted at ``/mnt/config/inference_config.yaml``::

    model: /workspace/weights            # local path to the weights (never a hub id at run time)
    served_model_name: phi-3-mini-4k-instruct
    backend: transformers                # or vllm
    dtype: bfloat16                      # auto | float32 | float16 | bfloat16
    max_model_len: 4096                  # prompt + completion tokens (default: the model's own limit)
    max_new_tokens: 256                  # default completion length when a request names none
    max_new_tokens_limit: 4096           # a request asking for more is refused (400)
    max_request_bytes: 4194304           # a larger request body is refused (413)
    max_pending_requests: null           # generations admitted at once; one more is a 429 (null: the backend's)
    api_key_file: null                   # a file with the bearer token clients must send (null: no auth)
    adapters_dir: /mnt/adapter
    transformers:                        # backend-specific
      device_map: auto
      combination_type: cat
    vllm:                                # passed to vLLM's engine args (dashes or underscores)
      gpu-memory-utilization: 0.9
      max-loras: 4

Unknown top-level keys (e.g. Kaito's ``max_probe_steps``) are logged and ignored. The bearer token can
also come from the environment (``KAITO_API_KEY``, e.g. a Secret's key); ``/health`` and ``/metrics`` stay
open for the kubelet's probes and Prometheus.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("kaito.inference")

DEFAULT_CONFIG_PATH = "/mnt/config/inference_config.yaml"
#: The environment variable that may hold the bearer token (see ``InferenceConfig.api_key_file``).
API_KEY_ENV = "KAITO_API_KEY"


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    device_map: str | None = "auto"
    """Accelerate device map; ``cpu`` forces CPU."""
    combination_type: str = "cat"
    """peft ``add_weighted_adapter`` combination type (``cat``: exact blending by strength)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (``trust_remote_code`` of transformers)."""
    chat_template: str | None = None
    """A Jinja chat template, or a path to one (default: the tokenizer's own)."""


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), use_attribute_docstrings=True)
    model: str = "/workspace/weights"
    """Local directory of the model weights (never a hub id at run time)."""
    served_model_name: str | None = None
    """Name in ``/v1/models`` (default: the directory name)."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Which backend generates: transformers (CPU or GPU) or vLLM (GPU)."""
    dtype: str = "auto"
    """Weights' dtype: auto, float32, float16 or bfloat16."""
    max_model_len: int | None = Field(None, ge=1)
    """Prompt plus completion tokens one request may use (default: the model's own limit)."""
    max_new_tokens: int = Field(256, ge=1)
    """Completion length when a request names none."""
    max_new_tokens_limit: int = Field(4096, ge=1)
    """The most completion tokens a request may ask for; more is a 400 ``max_tokens_exceeded``."""
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1)
    """The largest request body (bytes) the server reads; a larger one is a 413 ``request_too_large``,
    refused before it is parsed or tokenized. 4 MiB holds a million-token prompt of ordinary text."""
    max_pending_requests: int | None = Field(None, ge=1)
    """Generations admitted at once, running or waiting for the model; one more is answered at once with
    a 429 ``server_busy`` and ``Retry-After``. None: the backend's own (transformers 16: it generates one at
    a time; vLLM 256: it batches them)."""
    api_key_file: str | None = None
    """A file holding the bearer token every request but ``/health`` and ``/metrics`` must send
    (``Authorization: Bearer <token>``, else a 401), such as a mounted Secret's key; re-read when it
    changes. The environment variable ``KAITO_API_KEY`` is a second way to give one. Neither: no auth."""
    adapters_dir: str = "/mnt/adapter"
    """Where the adapters are (one directory each)."""
    host: str = "0.0.0.0"
    """Address the server listens on."""
    port: int = Field(5000, ge=1, le=65535)
    """Port the server listens on."""
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    """Options of the transformers backend."""
    vllm: dict[str, Any] = Field(default_factory=dict)
    """vLLM engine arguments (dashes or underscores)."""

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.model.rstrip("/")).name or "model"


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> InferenceConfig:
    """Read the YAML file (if any) and apply the non-None overrides (CLI flags) on top."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if p.is_file():
            loaded = yaml.safe_load(p.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{p}: expected a mapping at the top level")
            data = loaded
        else:
            log.info("no inference config at %s; using defaults and flags", p)
    known = set(InferenceConfig.model_fields)
    ignored = sorted(set(data) - known)
    if ignored:
        log.info("ignoring unknown inference config keys: %s", ", ".join(ignored))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in TransformersOptions.model_fields and key not in known:
            data.setdefault("transformers", {})[key] = value
        else:
            data[key] = value
    return InferenceConfig.model_validate(data)
