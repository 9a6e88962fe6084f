"""The inference runtime: ``python -m kaito_presets.runtime.inference``."""

from .base import Backend, BackendError, Completion, Delta, SamplingParams, TokenLogprob, create_backend
from .config import InferenceConfig, load_config

__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "Delta",
    "InferenceConfig",
    "SamplingParams",
    "TokenLogprob",
    "create_backend",
    "load_config",
]
