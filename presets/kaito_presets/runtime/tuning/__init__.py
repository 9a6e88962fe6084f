"""The tuning runtime: ``python -m kaito_presets.runtime.tuning`` (torch is imported only when training)."""

from .config import (
    COMPLETION_MARKER,
    DatasetConfig,
    LoraConfig,
    ModelConfig,
    QuantizationConfig,
    TrainingConfig,
    default_template,
    default_training_config,
    load_training_config,
)

__all__ = [
    "COMPLETION_MARKER",
    "DatasetConfig",
    "LoraConfig",
    "ModelConfig",
    "QuantizationConfig",
    "TrainingConfig",
    "default_template",
    "default_training_config",
    "load_training_config",
]
