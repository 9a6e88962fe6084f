"""kaito-core presets: model and GPU SKU catalogs and the in-pod runtimes.

The catalogs are data files (``catalog/models/*.yaml``, ``catalog/skus/*.yaml``)
loaded and checked on first use::

    from kaito_presets import default_catalog, format_quantity

    catalog = default_catalog()
    phi = catalog.model("phi-3-mini-4k-instruct")
    phi.inference.gpu_memory, phi.inference.gpu_count      # bytes, GPUs
    sku = catalog.sku("standard_nc6s_v3")                  # case-insensitive
    sku.gpu_count, sku.gpu_memory, sku.vcpus, sku.quota_family
    format_quantity(sku.gpu_memory)                        # "16Gi"

The runtimes (``kaito_presets.runtime``) are optional extras and are not
imported here.
"""

from kaito_presets.loader import (
    RUNTIME_TRANSFORMERS,
    RUNTIME_VLLM,
    RUNTIMES,
    TUNING_METHODS,
    WEIGHTS_SOURCE_HUGGINGFACE,
    WEIGHTS_SOURCE_OCI,
    WEIGHTS_SOURCES,
    Catalog,
    CatalogError,
    GpuSku,
    InferenceRequirements,
    ModelPreset,
    TuningSupport,
    UnknownPresetError,
    UnknownSkuError,
    WeightsDefaults,
    default_catalog,
    format_quantity,
    load_catalog,
    parse_quantity,
)


def get_preset(name: str) -> ModelPreset:
    """The packaged preset called ``name`` (raises :class:`UnknownPresetError`)."""
    return default_catalog().model(name)


def get_sku(name: str) -> GpuSku:
    """The packaged GPU SKU called ``name``, any case (raises :class:`UnknownSkuError`)."""
    return default_catalog().sku(name)


__all__ = [
    "RUNTIMES",
    "RUNTIME_TRANSFORMERS",
    "RUNTIME_VLLM",
    "TUNING_METHODS",
    "WEIGHTS_SOURCES",
    "WEIGHTS_SOURCE_HUGGINGFACE",
    "WEIGHTS_SOURCE_OCI",
    "Catalog",
    "CatalogError",
    "GpuSku",
    "InferenceRequirements",
    "ModelPreset",
    "TuningSupport",
    "UnknownPresetError",
    "UnknownSkuError",
    "WeightsDefaults",
    "default_catalog",
    "format_quantity",
    "get_preset",
    "get_sku",
    "load_catalog",
    "parse_quantity",
]
