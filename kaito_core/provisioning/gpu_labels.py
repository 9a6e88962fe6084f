"""GPUs of a Node read from the NVIDIA GPU feature discovery (GFD) labels, as Kaito's BYO mode reads them.

A node the user brings without an instance type the catalog knows says what it has through the
labels GFD (or the GPU operator) puts on it::

    nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB
    nvidia.com/gpu.count:   "8"
    nvidia.com/gpu.memory:  "81920"        # MiB, of one GPU

:func:`node_gpus` turns them into a :class:`NodeGpus` (the same ``gpu_count`` / ``gpu_memory`` a
catalog SKU has, so fit checks and node counts take either), or says which label is missing or
malformed. One GPU's memory is rounded to whole GiB as Kaito does (``pkg/sku/helpers.go``), so a
GPU that reports 81559 MiB counts as the 80 GiB its preset figures assume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kaito_core.engine.objects import meta

__all__ = ["GFD_LABELS", "LABEL_GPU_COUNT", "LABEL_GPU_MEMORY", "LABEL_GPU_PRODUCT", "NodeGpus", "node_gpus"]

LABEL_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
LABEL_GPU_COUNT: Final = "nvidia.com/gpu.count"
#: Memory of one GPU, in MiB.
LABEL_GPU_MEMORY: Final = "nvidia.com/gpu.memory"
GFD_LABELS: Final = (LABEL_GPU_PRODUCT, LABEL_GPU_COUNT, LABEL_GPU_MEMORY)

_GIB: Final = 2**30


@dataclass(frozen=True)
class NodeGpus:
    """What a node's GFD labels say it has."""

    node: str
    product: str
    gpu_count: int
    gpu_memory_per_gpu: int
    """Bytes of one GPU (whole GiB)."""
    memory_mib: int
    """The ``nvidia.com/gpu.memory`` label as written (MiB), for messages."""

    @property
    def gpu_memory(self) -> int:
        """Total GPU memory of the node (bytes)."""
        return self.gpu_count * self.gpu_memory_per_gpu

    @property
    def labels_text(self) -> str:
        """The labels as a person reads them in a message."""
        return (f"{LABEL_GPU_PRODUCT}={self.product}, {LABEL_GPU_COUNT}={self.gpu_count}, "
                f"{LABEL_GPU_MEMORY}={self.memory_mib} (MiB per GPU)")


def _positive_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def node_gpus(node: Mapping[str, Any]) -> NodeGpus | str:
    """The node's GPUs from its GFD labels, or why they cannot be read (names the node and the label)."""
    view = meta(node)
    labels, name = view.labels, view.name
    missing = [label for label in GFD_LABELS if not labels.get(label)]
    if missing:
        return (f"node {name} has no {', '.join(missing)} label(s); run NVIDIA GPU feature discovery on it "
                "(the chart's gpuFeatureDiscovery.enabled) or set resource.instanceType")
    count = _positive_int(labels[LABEL_GPU_COUNT])
    if count is None:
        return f"node {name}: {LABEL_GPU_COUNT}={labels[LABEL_GPU_COUNT]!r} is not a positive whole number"
    mib = _positive_int(labels[LABEL_GPU_MEMORY])
    if mib is None:
        return (f"node {name}: {LABEL_GPU_MEMORY}={labels[LABEL_GPU_MEMORY]!r} is not a positive whole number "
                "of MiB")
    per_gpu = int(mib / 1024 + 0.5) * _GIB
    return NodeGpus(node=name, product=labels[LABEL_GPU_PRODUCT], gpu_count=count, gpu_memory_per_gpu=per_gpu,
                    memory_mib=mib)
