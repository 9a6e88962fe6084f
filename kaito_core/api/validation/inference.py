"""Inference checks of the validator: preset or template, runtime, and adapters."""

from __future__ import annotations

import math
import re

from kaito_presets import RUNTIME_VLLM, ModelPreset

from kaito_core.api.constants import ANNOTATION_RUNTIME, MAX_ADAPTERS
from kaito_core.api.errors import Messages, Rule
from kaito_core.api.validation.fields import _DNS_LABEL
from kaito_core.api.validation.pods import _PodChecks
from kaito_core.api.validation.resources import _ResourceChecks, resolve_runtime
from kaito_core.api.workspace import AdapterSpec, DataSource, InferenceSpec

# Every pattern is used with fullmatch: "$" would also match before a trailing newline.
_DECIMAL = re.compile(r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*")


class _InferenceChecks(_ResourceChecks, _PodChecks):
    """Inference checks: a preset or a pod template, the runtime, the adapters."""

    def check_inference(self, inference: InferenceSpec) -> None:
        if inference.preset is not None and inference.template is not None:
            self.error("inference.template", Messages.PRESET_AND_TEMPLATE, Rule.PRESET_AND_TEMPLATE)
        elif inference.preset is None and inference.template is None:
            self.error("inference", Messages.NEITHER_PRESET_NOR_TEMPLATE, Rule.NEITHER_PRESET_NOR_TEMPLATE)
        preset = None
        if inference.preset is not None:
            preset = self.preset(inference.preset, "inference.preset")
            if preset is not None:
                self.check_fit(preset, preset.inference.gpu_memory, preset.inference.gpu_count, "inference")
        self.check_runtime(preset)
        if preset is not None and inference.adapters:
            self.check_adapter_runtime(preset, inference.adapters)
        if inference.template is not None:
            self.check_pod_template(inference.template, "inference.template")
        if inference.adapters:
            self.check_adapters(inference.adapters, has_preset=inference.preset is not None)

    def check_adapter_runtime(self, preset: ModelPreset, adapters: list[AdapterSpec]) -> None:
        """vLLM serves each adapter as a model of its own at full strength and cannot scale one: refuse a
        strength other than 1 there, as Kaito does, rather than ignore it (docs/runtimes.md)."""
        runtime = resolve_runtime(self.ws.runtime, self.default_runtime, preset)
        if runtime != RUNTIME_VLLM:
            return
        for index, adapter in enumerate(adapters):
            strength = adapter.strength
            if strength is None or not _DECIMAL.fullmatch(strength) or not 0.0 <= float(strength) < 1.0:
                continue  # unset, full strength, or not a strength at all (check_strength says so)
            self.error(f"inference.adapters[{index}].strength",
                       f"strength {strength!r} cannot be applied under vLLM ({preset.name}'s runtime "
                       "here): it serves each adapter as its own model at full strength; remove strength "
                       f"(or set \"1.0\"), or run the transformers runtime (annotation {ANNOTATION_RUNTIME}: "
                       "transformers) to blend adapters by strength", Rule.ADAPTER_STRENGTH)

    def check_adapters(self, adapters: list[AdapterSpec], *, has_preset: bool) -> None:
        if not has_preset:
            self.error("inference.adapters", "adapters need inference.preset: they are loaded on top of a "
                       "preset model; remove them or use a preset", Rule.ADAPTERS_NEED_PRESET)
        if len(adapters) > MAX_ADAPTERS:
            self.error("inference.adapters", f"{len(adapters)} adapters given; at most {MAX_ADAPTERS} are "
                       "allowed, remove some", Rule.TOO_MANY_ADAPTERS)
        seen: dict[str, int] = {}
        for index, adapter in enumerate(adapters):
            path = f"inference.adapters[{index}]"
            source = adapter.source
            if source is None:
                self.error(f"{path}.source", "required: give the adapter's name and image (or volumeSource)",
                           Rule.ADAPTER_SOURCE)
            else:
                self.check_adapter_source(source, path, index, seen)
            if adapter.strength is not None:
                self.check_strength(adapter.strength, f"{path}.strength")

    def check_adapter_source(self, source: DataSource, path: str, index: int, seen: dict[str, int]) -> None:
        name = source.name
        if not name:
            self.error(f"{path}.source.name", "required: name the adapter (a DNS label such as my-adapter)",
                       Rule.ADAPTER_SOURCE)
        elif len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            self.error(f"{path}.source.name", f"{name!r} is not a valid adapter name: use at most 63 lowercase "
                       "letters, digits and '-' (it names a container)", Rule.ADAPTER_SOURCE)
        elif name in seen:
            self.error(f"{path}.source.name", f"duplicate adapter name {name!r} (also used by "
                       f"inference.adapters[{seen[name]}]); give each adapter a unique name",
                       Rule.DUPLICATE_ADAPTER)
        else:
            seen[name] = index
        if source.urls:
            self.error(f"{path}.source.urls", "URLs are not supported as an adapter source; give image or "
                       "volumeSource", Rule.ADAPTER_SOURCE)
        if source.image and source.volume_source:
            self.error(f"{path}.source", "set either image or volumeSource, not both", Rule.ADAPTER_SOURCE)
        elif not source.image and not source.volume_source:
            self.error(f"{path}.source.image", "required: give the image that holds the adapter, or a "
                       "volumeSource (e.g. persistentVolumeClaim) with the adapter's files at its root",
                       Rule.ADAPTER_SOURCE)
        if source.volume_source:
            self.check_volume_source(source.volume_source, f"{path}.source.volumeSource", named=False)

    def check_strength(self, strength: str, path: str) -> None:
        value = float(strength) if _DECIMAL.fullmatch(strength) else math.nan
        if math.isnan(value):
            self.error(path, f"{strength!r} is not a number; write a number from 0 to 1 as a string, "
                       'e.g. "0.5"', Rule.ADAPTER_STRENGTH)
        elif not 0.0 <= value <= 1.0:
            self.error(path, f"{strength!r} is outside [0, 1]; use a number from 0 to 1, e.g. \"0.5\"",
                       Rule.ADAPTER_STRENGTH)
