"""Tuning configuration: the mounted training ConfigMap (``training_config.yaml``), Kaito's shape.

Mounted at ``/mnt/config/training_config.yaml``::

    training_config:
      ModelConfig:          # AutoModelForCausalLM.from_pretrained kwargs (+ chat_template)
      QuantizationConfig:   # transformers.BitsAndBytesConfig kwargs (qlora: 4-bit nf4); empty for lora
      LoraConfig:           # peft.LoraConfig kwargs; target_modules default per model type
      TrainingArguments:    # trl.SFTConfig (a transformers.TrainingArguments) kwargs
      DatasetConfig:        # where the data is and which columns to use (see DatasetConfig below)

A ``DataCollator`` section (Kaito's templates carry one) is accepted and ignored: training always uses
trl's own collator (Kaito's language-modeling collator breaks at batch size > 1 with current trl).
This module imports neither torch nor transformers, so the controller can render the templates.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("kaito.tuning")

DEFAULT_CONFIG_PATH = "/mnt/config/training_config.yaml"
DEFAULT_MODEL_PATH = "/workspace/weights"
DEFAULT_DATA_PATH = "/mnt/data"
DEFAULT_OUTPUT_DIR = "/mnt/results"
COMPLETION_MARKER = "fine_tuning_completed.txt"
FAILURE_MARKER = "fine_tuning_failed.txt"

Method = Literal["lora", "qlora"]

# LoRA target modules per transformers model_type (the preset default when the ConfigMap names none).
TARGET_MODULES: dict[str, list[str]] = {
    "phi3": ["qkv_proj", "o_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "falcon": ["query_key_value"],
}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    pretrained_model_name_or_path: str = DEFAULT_MODEL_PATH
    torch_dtype: str | None = "bfloat16"
    local_files_only: bool = True
    device_map: str | dict[str, Any] | None = "auto"
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, description="Jinja template or a path to one")


class QuantizationConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_compute_dtype: str = "bfloat16"
    bnb_4bit_use_double_quant: bool = False

    @property
    def enabled(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    r: int = Field(8, ge=1)
    lora_alpha: int = Field(8, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str | None = None
    bias: str = "none"


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_path: str = Field(DEFAULT_DATA_PATH, description="a file, or a directory searched recursively")
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    train_test_split: float = Field(1.0, gt=0.0, le=1.0, description="fraction used for training")
    messages_column: str | None = None
    prompt_column: str | None = None
    completion_column: str | None = None
    text_column: str | None = None
    max_samples: int | None = Field(None, ge=1)


class TrainingConfig(BaseModel):
    """The ``training_config`` mapping; attributes are the sections under their ConfigMap names' aliases."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())
    model_cfg: ModelConfig = Field(default_factory=ModelConfig, alias="ModelConfig")
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig, alias="QuantizationConfig")
    lora: LoraConfig = Field(default_factory=LoraConfig, alias="LoraConfig")
    training_args: dict[str, Any] = Field(default_factory=dict, alias="TrainingArguments")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, alias="DatasetConfig")
    data_collator: dict[str, Any] | None = Field(
        None, alias="DataCollator", description="accepted for compatibility; ignored"
    )

    @property
    def output_dir(self) -> Path:
        return Path(self.training_args.get("output_dir", DEFAULT_OUTPUT_DIR))


_BASE: dict[str, Any] = {
    "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
    "LoraConfig": {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0},
    "TrainingArguments": {
        "output_dir": DEFAULT_OUTPUT_DIR,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "save_strategy": "epoch",
        "logging_steps": 10,
        "ddp_find_unused_parameters": False,
    },
    "DatasetConfig": {"dataset_path": DEFAULT_DATA_PATH, "shuffle_dataset": True, "train_test_split": 1.0},
}
_QLORA_QUANT = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_use_double_quant": True,
}


def default_training_config(method: Method) -> dict[str, Any]:
    """The default ``training_config`` mapping for a method (what the templates hold)."""
    if method not in ("lora", "qlora"):
        raise ValueError(f"unknown tuning method {method!r} (lora or qlora)")
    base = copy.deepcopy(_BASE)
    return {
        "ModelConfig": base["ModelConfig"],
        "QuantizationConfig": dict(_QLORA_QUANT) if method == "qlora" else {},
        "LoraConfig": base["LoraConfig"],
        "TrainingArguments": base["TrainingArguments"],
        "DatasetConfig": base["DatasetConfig"],
    }


def default_template(method: Method) -> str:
    """The ConfigMap value of ``training_config.yaml`` for a method."""
    return yaml.safe_dump({"training_config": default_training_config(method)}, sort_keys=False)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_training_config(
    path: str | Path | None, method: Method = "lora", overrides: dict[str, Any] | None = None
) -> TrainingConfig:
    """The method's defaults, overlaid by the ConfigMap file's sections, overlaid by ``overrides``.

    A section present in the file replaces the defaults key by key (not wholesale), so a user
    ConfigMap that only sets ``TrainingArguments.num_train_epochs`` keeps everything else.
    """
    data = default_training_config(method)
    if path and Path(path).is_file():
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping")
        section = loaded.get("training_config", loaded)
        if not isinstance(section, dict):
            raise ValueError(f"{path}: training_config must be a mapping")
        data = _merge(data, section)
    elif path:
        log.info("no training config at %s; using the %s defaults", path, method)
    data = _merge(data, overrides or {})
    return TrainingConfig.model_validate(data)
