"""Inference server configuration: the mounted ConfigMap (YAML) overlaid by CLI flags.

ConfigMap key ``inference_config.yaml``, mounted at ``/mnt/config/inference_config.yaml``::

    model: /workspace/weights            # local path to the weights (never a hub id at run time)
    served_model_name: phi-3-mini-4k-instruct
    backend: transformers                # or vllm
    dtype: bfloat16                      # auto | float32 | float16 | bfloat16
    max_model_len: 4096                  # prompt + completion tokens (default: the model's own limit)
    max_new_tokens: 256                  # default completion length when a request names none
    max_new_tokens_limit: 4096           # a request asking for more is refused (400)
    adapters_dir: /mnt/adapter
    transformers:                        # backend-specific
      device_map: auto
      combination_type: cat
    vllm:                                # passed to vLLM's engine args (dashes or underscores)
      gpu-memory-utilization: 0.9
      max-loras: 4

Unknown top-level keys (e.g. Kaito's ``max_probe_steps``) are logged and ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("kaito.inference")

DEFAULT_CONFIG_PATH = "/mnt/config/inference_config.yaml"


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_map: str | None = Field("auto", description="accelerate device map; 'cpu' to force CPU")
    combination_type: str = Field("cat", description="peft add_weighted_adapter combination type")
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, description="a Jinja chat template, or a path to one")


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str = Field("/workspace/weights", description="local directory of the model weights")
    served_model_name: str | None = Field(None, description="name in /v1/models (default: the directory name)")
    backend: Literal["transformers", "vllm"] = "transformers"
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_new_tokens_limit: int = Field(4096, ge=1)
    adapters_dir: str = "/mnt/adapter"
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=1, le=65535)
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    vllm: dict[str, Any] = Field(default_factory=dict)

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
