"""GPU memory and context sizing for vLLM, after Kaito's estimator.

Kaito's ``presets/workspace/generator/model-sku-calculation.md`` (measured on vLLM 0.10) counts, per
GPU: the weights at 102 % of their file size (split over the GPUs), 1.7 GiB of activations and
0.6 GiB outside PyTorch, and the KV cache (``kv_bytes_per_token x tokens``), all within
``gpu-memory-utilization`` of the GPU. Solved for the tokens, that is the largest ``max_model_len``
vLLM can allocate; capped at the model's own context length. Without it a 128k-context preset
on a 16 GiB GPU asks vLLM for a KV cache it cannot allocate and the pod fails at start.
"""

from __future__ import annotations

import math
from typing import Final, Protocol

from kaito_presets.loader import Catalog, GpuSku, ModelPreset

__all__ = [
    "GPU_MEMORY_UTILIZATION",
    "MIN_MODEL_LEN",
    "PER_GPU_OVERHEAD",
    "SIZING_TOKENS",
    "WEIGHTS_OVERHEAD",
    "GpuShape",
    "max_model_len",
    "nodes_needed",
    "serving_gpu_memory",
    "smallest_fit",
]



class GpuShape(Protocol):
    """What sizing needs of a node: a GPU SKU of the catalog, or a node's GPU-feature-discovery labels."""

    @property
    def gpu_count(self) -> int: ...
    @property
    def gpu_memory_per_gpu(self) -> int: ...
    @property
    def gpu_memory(self) -> int: ...


_GI: Final = 2**30
#: The share of each GPU vLLM may use (its ``--gpu-memory-utilization``).
GPU_MEMORY_UTILIZATION: Final = 0.9
#: Weights in GPU memory, relative to their file size (Kaito: "approximately 102 %").
WEIGHTS_OVERHEAD: Final = 1.02
#: Activations (1.7 GiB) plus non-PyTorch memory (0.6 GiB), per GPU.
PER_GPU_OVERHEAD: Final = int(2.3 * _GI)
#: The context Kaito sizes a node for when nothing else is asked (its default max token length).
SIZING_TOKENS: Final = 2048
#: max_model_len is rounded down to a multiple of this, and never below it.
MIN_MODEL_LEN: Final = 256


def serving_gpu_memory(weights_size: int, kv_bytes_per_token: int, *, tokens: int = SIZING_TOKENS,
                       gpus: int = 1) -> int:
    """Total GPU memory (bytes, rounded up to GiB) to serve ``tokens`` of context on ``gpus`` GPUs."""
    used = WEIGHTS_OVERHEAD * weights_size + gpus * PER_GPU_OVERHEAD + kv_bytes_per_token * tokens
    return math.ceil(used / GPU_MEMORY_UTILIZATION / _GI) * _GI


def max_model_len(preset: ModelPreset, *, gpu_memory_per_gpu: int, gpus: int,
                  utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    """The longest context the KV cache fits in on ``gpus`` GPUs of ``gpu_memory_per_gpu`` bytes each.

    The model's context length when it fits, or when the preset has no attention figures to size by.
    """
    if preset.attention is None:
        return preset.context_length
    free = gpus * (gpu_memory_per_gpu * utilization - PER_GPU_OVERHEAD) - WEIGHTS_OVERHEAD * preset.weights_size
    tokens = int(free // preset.attention.kv_bytes_per_token)
    if tokens >= preset.context_length:
        return preset.context_length
    # A preset that does not fit is refused by the fit check; this only keeps the figure sane.
    return min(preset.context_length, max(MIN_MODEL_LEN, tokens // MIN_MODEL_LEN * MIN_MODEL_LEN))


def nodes_needed(sku: GpuShape, need_memory: int, need_gpus: int) -> int:
    """How many ``sku`` nodes hold ``need_memory`` bytes of GPU memory on ``need_gpus`` GPUs."""
    return max(1, math.ceil(need_memory / sku.gpu_memory), math.ceil(need_gpus / sku.gpu_count))


def smallest_fit(catalog: Catalog, preset: ModelPreset, cloud: str) -> tuple[GpuSku, int] | None:
    """The smallest ``cloud`` instance type that serves ``preset``, and how many nodes of it.

    One node when any instance type holds it; else, for a preset that splits across nodes, the
    instance type that needs the fewest nodes (then the least GPU memory in all).
    """
    need, gpus = preset.inference.gpu_memory, preset.inference.gpu_count
    single = catalog.suggest_skus(need, gpus, cloud)
    if single:
        return single[0], 1
    if not preset.distributed_inference:
        return None
    skus = [s for s in catalog.skus if s.cloud == cloud]
    if not skus:
        return None
    best = min(skus, key=lambda s: (nodes_needed(s, need, gpus), nodes_needed(s, need, gpus) * s.gpu_memory,
                                    s.name.lower()))
    return best, nodes_needed(best, need, gpus)
