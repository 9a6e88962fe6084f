"""The model and GPU SKU catalogs: data files under ``catalog/``, loaded and checked once.

``catalog/models/*.yaml`` holds one model family per file; ``catalog/skus/*.yaml``
one cloud per file. Each file cites its public sources. Loading validates every
entry (pydantic) and the catalog as a whole (unique names, sane figures); a bad
file raises :class:`CatalogError` naming the file and the field.

Memory and disk figures are Kubernetes quantities in the files ("16Gi") and
bytes (``int``) in Python; :func:`format_quantity` writes them back.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "RUNTIMES",
    "RUNTIME_TRANSFORMERS",
    "RUNTIME_VLLM",
    "TUNING_METHODS",
    "WEIGHTS_SOURCES",
    "WEIGHTS_SOURCE_HUGGINGFACE",
    "WEIGHTS_SOURCE_OCI",
    "Attention",
    "Catalog",
    "CatalogError",
    "GpuSku",
    "InferenceRequirements",
    "ModelPreset",
    "PresetResolver",
    "TuningSupport",
    "UnknownPresetError",
    "UnknownSkuError",
    "WeightsDefaults",
    "default_catalog",
    "format_quantity",
    "load_catalog",
    "parse_quantity",
]

RUNTIME_VLLM = "vllm"
RUNTIME_TRANSFORMERS = "transformers"
RUNTIMES: tuple[str, ...] = (RUNTIME_VLLM, RUNTIME_TRANSFORMERS)
TUNING_METHODS: tuple[str, ...] = ("lora", "qlora")
#: Where a preset's weights come from: an OCI artifact in Kaito's (ModelPack) layout, or the
#: Hugging Face repository at the pinned revision. A third source, the user's volume, is a
#: per-Workspace choice and never a preset default.
WEIGHTS_SOURCE_OCI = "oci"
WEIGHTS_SOURCE_HUGGINGFACE = "huggingface"
WEIGHTS_SOURCES: tuple[str, ...] = (WEIGHTS_SOURCE_OCI, WEIGHTS_SOURCE_HUGGINGFACE)

Runtime = Literal["vllm", "transformers"]
TuningMethod = Literal["lora", "qlora"]


_T = TypeVar("_T", bound=BaseModel)


class CatalogError(ValueError):
    """A catalog data file is malformed or inconsistent."""


class UnknownPresetError(KeyError):
    """No model preset of that name; ``suggestions`` holds close names."""

    def __init__(self, name: str, suggestions: list[str]):
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        return f"unknown preset {self.name!r}{hint}"


class UnknownSkuError(KeyError):
    """No GPU SKU of that name; ``suggestions`` holds close names."""

    def __init__(self, name: str, suggestions: list[str]):
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        return f"unknown instance type {self.name!r}{hint}"


# --- quantities -------------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGTPE]i|[kMGTPE]?)\s*$")


def parse_quantity(value: object) -> int:
    """A Kubernetes-style byte quantity ("16Gi", "7.12Gi", "500M", 1024) in bytes.

    Raises ``ValueError`` for anything else (booleans, negative numbers, unknown suffixes).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a quantity must not be negative: {value!r}")
        return value
    if isinstance(value, float):
        if value < 0 or math.isnan(value) or math.isinf(value):
            raise ValueError(f"not a quantity: {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a quantity: {value!r} (write it like 16Gi or 500M)")
    number, suffix = match.groups()
    factor = _BINARY.get(suffix) or _DECIMAL[suffix]
    return round(float(number) * factor)


def format_quantity(size: int) -> str:
    """Bytes as a short binary quantity: 17179869184 -> "16Gi", 7645041786 -> "7.12Gi"."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        factor = _BINARY[suffix]
        if size >= factor:
            text = f"{size / factor:.2f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(size)


Bytes = Annotated[int, BeforeValidator(parse_quantity)]


class _Data(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
    )


# --- models -----------------------------------------------------------------------------------


class InferenceRequirements(_Data):
    """What serving the model needs on its node(s)."""

    gpu_memory: Bytes = Field(description="total GPU memory the model needs to serve (bytes)")
    gpu_count: int = Field(ge=1, description="minimum number of GPUs")
    disk: Bytes = Field(description="node disk for the image and the weights (bytes)")


class Attention(_Data):
    """The attention figures that size the KV cache (from the model's ``config.json``).

    Grouped/multi-head attention stores a key and a value per KV head per layer; DeepSeek-style
    multi-head latent attention (MLA) stores one compressed latent (``kvLoraRank``) plus the rotary
    key part (``qkRopeHeadDim``) per layer. Either ``kvHeads`` and ``headDim``, or both MLA figures.
    """

    layers: int = Field(ge=1, description="num_hidden_layers")
    kv_heads: int | None = Field(default=None, ge=1, description="num_key_value_heads (1 for multi-query)")
    head_dim: int | None = Field(default=None, ge=1, description="head_dim, else hidden_size / num_attention_heads")
    kv_lora_rank: int | None = Field(default=None, ge=1, description="MLA: kv_lora_rank")
    qk_rope_head_dim: int | None = Field(default=None, ge=0, description="MLA: qk_rope_head_dim")
    kv_cache_dtype_bytes: int = Field(
        default=2, ge=1, le=4,
        description="bytes per cached element; vLLM's default KV cache is the model's 16-bit dtype")

    @model_validator(mode="after")
    def _check(self) -> Attention:
        mla = self.kv_lora_rank is not None
        if mla and self.qk_rope_head_dim is None:
            raise ValueError("kvLoraRank (MLA) needs qkRopeHeadDim too")
        if not mla and (self.kv_heads is None or self.head_dim is None):
            raise ValueError("give kvHeads and headDim (or kvLoraRank and qkRopeHeadDim for MLA)")
        return self

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes over all layers: 2 x layers x kvHeads x headDim x dtype bytes,
        or layers x (kvLoraRank + qkRopeHeadDim) x dtype bytes under MLA (as Kaito's generator counts)."""
        if self.kv_lora_rank is not None:
            per_layer = self.kv_lora_rank + (self.qk_rope_head_dim or 0)
        else:
            assert self.kv_heads is not None and self.head_dim is not None
            per_layer = 2 * self.kv_heads * self.head_dim
        return self.layers * per_layer * self.kv_cache_dtype_bytes


class TuningSupport(_Data):
    """Parameter-efficient fine-tuning the preset supports."""

    methods: dict[TuningMethod, Bytes] = Field(
        min_length=1, description="supported methods and the total GPU memory each needs (bytes)")
    target_modules: tuple[str, ...] = Field(min_length=1, description="default LoRA target modules")
    gpu_count: int = Field(default=1, ge=1, description="minimum number of GPUs")


class WeightsDefaults(_Data):
    """Where a preset's weights come from unless a Workspace says otherwise."""

    source: Literal["oci", "huggingface"] = Field(
        description="oci: the artifact <weights registry>/kaito-<preset>:<tag> (Kaito's published layout); "
                    "huggingface: huggingfaceId at revision, downloaded at pod start")
    tag: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$",
                     description="tag of the weights artifact (Kaito's supported_models.yaml `tag`)")


class ModelPreset(_Data):
    """One model preset: what it is, what it needs, how it runs."""

    # A catalog name ("phi-4"), or a Hugging Face id ("Qwen/Qwen3-8B") for a preset sized from its config.
    name: str = Field(pattern=r"^([a-z0-9]([a-z0-9.\-]*[a-z0-9])?"
                              r"|[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*)$")
    family: str
    huggingface_id: str
    revision: str = Field(pattern=r"^[0-9a-f]{40}$",
                          description="the Hugging Face commit the preset is pinned to")
    weights: WeightsDefaults
    source: str = Field(pattern=r"^https://")
    architecture: str
    parameters: str
    license: str
    gated: bool = False
    weights_size: Bytes
    context_length: int = Field(ge=1)
    runtimes: tuple[Runtime, ...] = Field(min_length=1, description="supported runtimes, default first")
    distributed_inference: bool = Field(
        default=False, description="whether the model can be split across several nodes")
    inference: InferenceRequirements
    attention: Attention | None = Field(
        default=None, description="KV cache figures; without them max_model_len is the full context")
    tuning: TuningSupport | None = None

    @property
    def default_runtime(self) -> str:
        return self.runtimes[0]

    @property
    def supports_tuning(self) -> bool:
        return self.tuning is not None

    @property
    def tuning_methods(self) -> tuple[str, ...]:
        return tuple(self.tuning.methods) if self.tuning else ()

    def tuning_gpu_memory(self, method: str) -> int | None:
        """GPU memory (bytes) tuning with ``method`` needs; None if unsupported."""
        if self.tuning is None:
            return None
        return next((size for name, size in self.tuning.methods.items() if name == method), None)

    @model_validator(mode="after")
    def _check(self) -> ModelPreset:
        if self.inference.gpu_memory < self.weights_size:
            raise ValueError(
                f"inference.gpuMemory ({format_quantity(self.inference.gpu_memory)}) is less than "
                f"weightsSize ({format_quantity(self.weights_size)})")
        if self.inference.disk < self.weights_size:
            raise ValueError("inference.disk is less than weightsSize")
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ValueError("runtimes lists a runtime twice")
        return self


class GpuSku(_Data):
    """One GPU instance type (VM size)."""

    name: str
    cloud: Literal["azure", "aws"]
    series: str = Field(description="the VM series / instance family, e.g. NCv3 or g5")
    quota_family: str = Field(description="the vCPU quota that covers it (Azure: az vm list-usage name)")
    vcpus: int = Field(ge=1)
    memory: Bytes = Field(description="host RAM (bytes)")
    gpu_count: int = Field(ge=1)
    gpu_model: str
    gpu_memory_per_gpu: Bytes = Field(alias="gpuMemory", description="memory of one GPU (bytes)")
    compute_capability: str = Field(pattern=r"^[0-9]+\.[0-9]+$")

    @property
    def gpu_memory(self) -> int:
        """Total GPU memory of one instance (bytes)."""
        return self.gpu_count * self.gpu_memory_per_gpu


class _ModelFile(_Data):
    family: str
    source: str
    models: list[dict[str, Any]]


class _SkuFile(_Data):
    cloud: Literal["azure", "aws"]
    source: str
    skus: list[dict[str, Any]]


# --- catalog ----------------------------------------------------------------------------------


#: Makes a preset for a name the catalog does not hold (a Hugging Face id); None when it cannot.
PresetResolver = Callable[[str], "ModelPreset | None"]


class Catalog:
    """Model presets and GPU SKUs by name. SKU lookups ignore case; preset lookups too.

    ``resolver`` (optional) is asked for names of the form ``org/model`` that the catalog does not
    hold: Kaito accepts any Hugging Face id as a preset name and sizes it from the model's config.
    """

    def __init__(self, models: Iterable[ModelPreset], skus: Iterable[GpuSku],
                 resolver: PresetResolver | None = None):
        self._models: dict[str, ModelPreset] = {}
        self._skus: dict[str, GpuSku] = {}
        self.resolver = resolver
        for model in models:
            key = model.name.lower()
            if key in self._models:
                raise CatalogError(f"model preset {model.name!r} is defined twice")
            self._models[key] = model
        for sku in skus:
            key = sku.name.lower()
            if key in self._skus:
                raise CatalogError(f"GPU SKU {sku.name!r} is defined twice")
            self._skus[key] = sku

    # models
    @property
    def models(self) -> tuple[ModelPreset, ...]:
        return tuple(sorted(self._models.values(), key=lambda m: m.name))

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self._models.values())

    def find_model(self, name: str) -> ModelPreset | None:
        if not isinstance(name, str):
            return None
        found = self._models.get(name.lower())
        if found is None and self.resolver is not None and name.count("/") == 1:
            found = self.resolver(name)
        return found

    def model(self, name: str) -> ModelPreset:
        """The preset called ``name``; :class:`UnknownPresetError` (with close matches) if none."""
        found = self.find_model(name)
        if found is None:
            raise UnknownPresetError(name, self.close_model_names(name))
        return found

    def unresolved_reason(self, name: str) -> str | None:
        """Why the resolver made no preset of ``name`` (None when it did, or has no reason to give)."""
        reason = getattr(self.resolver, "reason", None)
        answer = reason(name) if callable(reason) else None
        return answer if isinstance(answer, str) else None

    def close_model_names(self, name: str, n: int = 3) -> list[str]:
        return _close(name, {m.name.lower(): m.name for m in self._models.values()}, n)

    # SKUs
    @property
    def skus(self) -> tuple[GpuSku, ...]:
        return tuple(sorted(self._skus.values(), key=lambda s: (s.cloud, s.name.lower())))

    def sku_names(self, cloud: str | None = None) -> list[str]:
        return [s.name for s in self.skus if cloud is None or s.cloud == cloud]

    def find_sku(self, name: str) -> GpuSku | None:
        return self._skus.get(name.lower()) if isinstance(name, str) else None

    def sku(self, name: str) -> GpuSku:
        """The SKU called ``name`` (any case); :class:`UnknownSkuError` (with close matches) if none."""
        found = self.find_sku(name)
        if found is None:
            raise UnknownSkuError(name, self.close_sku_names(name))
        return found

    def close_sku_names(self, name: str, n: int = 3) -> list[str]:
        return _close(name, {s.name.lower(): s.name for s in self._skus.values()}, n)

    def suggest_skus(self, gpu_memory: int, gpu_count: int = 1, cloud: str | None = None) -> list[GpuSku]:
        """SKUs with at least that much total GPU memory and GPUs, smallest first.

        Ordered by GPU count, then total GPU memory, then vCPUs: the first is the
        smallest instance that fits.
        """
        fits = [s for s in self._skus.values()
                if s.gpu_memory >= gpu_memory and s.gpu_count >= gpu_count
                and (cloud is None or s.cloud == cloud)]
        return sorted(fits, key=lambda s: (s.gpu_count, s.gpu_memory, s.vcpus, s.name.lower()))


def _close(name: str, choices: Mapping[str, str], n: int) -> list[str]:
    """Names that start with ``name`` first ("phi-3-mini" -> the phi-3-mini presets), then similar ones."""
    if not isinstance(name, str) or not name:
        return []
    query = name.lower()
    keys = sorted(k for k in choices if k.startswith(query) and k != query)
    keys += [k for k in difflib.get_close_matches(query, list(choices), n=n, cutoff=0.6) if k not in keys]
    return [choices[k] for k in keys[:n]]


def _read_yaml(path: Traversable | Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path.name}: not valid YAML: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def _load_entries(folder: Traversable | Path, file_model: type[_ModelFile] | type[_SkuFile],
                  entry_model: type[_T], field: str, inherited: str) -> list[_T]:
    """Every entry of every ``*.yaml`` in ``folder``: the file's ``inherited`` key (family or cloud)
    goes into each entry; errors name the file and the entry."""
    entries: list[_T] = []
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        try:
            data = file_model.model_validate(_read_yaml(path))
        except ValidationError as exc:
            raise CatalogError(f"{path.name}: {_describe(exc)}") from exc
        for index, entry in enumerate(getattr(data, field)):
            try:
                entries.append(entry_model.model_validate({inherited: getattr(data, inherited), **entry}))
            except ValidationError as exc:
                name = entry.get("name", f"{field}[{index}]")
                raise CatalogError(f"{path.name}: {name}: {_describe(exc)}") from exc
    return entries


def _load_models(folder: Traversable | Path) -> list[ModelPreset]:
    return _load_entries(folder, _ModelFile, ModelPreset, "models", "family")


def _load_skus(folder: Traversable | Path) -> list[GpuSku]:
    return _load_entries(folder, _SkuFile, GpuSku, "skus", "cloud")


def load_catalog(folder: Path | None = None, *, resolver: PresetResolver | None = None) -> Catalog:
    """Load and check a catalog folder (``models/`` and ``skus/``); the packaged one by default."""
    root: Traversable | Path = folder if folder is not None else resources.files("kaito_presets") / "catalog"
    return Catalog(_load_models(root / "models"), _load_skus(root / "skus"), resolver)


@functools.cache
def default_catalog() -> Catalog:
    """The packaged catalog, loaded once per process; Hugging Face ids resolve through the hub
    (``KAITO_HF_ENDPOINT``, see :mod:`kaito_presets.huggingface`)."""
    from kaito_presets.huggingface import HuggingFaceResolver  # it imports this module

    return load_catalog(resolver=HuggingFaceResolver.from_env())
