"""Tuning checks of the validator: the preset and method, the input data and where the output goes."""

from __future__ import annotations

from kaito_presets import ModelPreset, format_quantity

from kaito_core.api.errors import Rule
from kaito_core.api.validation.pods import _PodChecks
from kaito_core.api.validation.resources import _ResourceChecks
from kaito_core.api.validation.urls import url_problem
from kaito_core.api.workspace import DataDestination, DataSource, TuningSpec


class _TuningChecks(_ResourceChecks, _PodChecks):
    """Tuning checks: the preset and method, input and output."""

    def check_tuning(self, tuning: TuningSpec) -> None:
        if tuning.preset is None:
            self.error("tuning.preset", "required: name the preset model to tune (`kaito presets` lists "
                       "those that support tuning)", Rule.TUNING_PRESET_REQUIRED)
        else:
            preset = self.preset(tuning.preset, "tuning.preset")
            if preset is not None:
                self.check_tuning_preset(preset, tuning.method)
        self.check_input(tuning.input)
        self.check_output(tuning.output)
        if self.ws.resource.count > 1:
            self.error("resource.count", f"{self.ws.resource.count} nodes asked for; tuning runs on one node "
                       "(as in Kaito: multi-node tuning is not supported); set count to 1", Rule.TUNING_MULTI_NODE)

    def check_tuning_preset(self, preset: ModelPreset, method: str) -> None:
        if preset.tuning is None:
            able = [m.name for m in self.catalog.models if m.supports_tuning]
            self.error("tuning.preset.name", f"{preset.name} does not support tuning ({method}); presets that do: "
                       f"{', '.join(able)}", Rule.TUNING_NOT_SUPPORTED)
            return
        need = preset.tuning_gpu_memory(method)
        if need is None:
            self.error("tuning.method", f"{preset.name} does not support {method} tuning; use "
                       f"{' or '.join(preset.tuning_methods)}", Rule.TUNING_METHOD_NOT_SUPPORTED)
            return
        alternative = None
        sku = self.sku
        for other in preset.tuning_methods:
            other_need = preset.tuning_gpu_memory(other)
            if (other != method and other_need is not None and sku is not None
                    and other_need <= sku.gpu_memory and preset.tuning.gpu_count <= sku.gpu_count):
                alternative = f"method {other} (needs {format_quantity(other_need)})"
        self.check_fit(preset, need, preset.tuning.gpu_count, f"{method} tuning", alternative)

    def check_input(self, source: DataSource | None) -> None:
        if source is None:
            self.error("tuning.input", "required: give the training data as urls, image or volumeSource",
                       Rule.TUNING_INPUT)
            return
        given = [name for name, value in (("urls", source.urls), ("image", source.image),
                                          ("volumeSource", source.volume_source)) if value]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "none is set"
            self.error("tuning.input", f"set exactly one of urls, image or volumeSource; {got}", Rule.TUNING_INPUT)
        for index, url in enumerate(source.urls or ()):
            problem = url_problem(url)
            if problem is not None:
                self.error(f"tuning.input.urls[{index}]", problem[1], problem[0])
        if source.volume_source:
            self.check_volume_source(source.volume_source, "tuning.input.volumeSource", named=False)

    def check_output(self, dest: DataDestination | None) -> None:
        if dest is None:
            self.error("tuning.output", "required: give where the adapter goes, an image (with "
                       "imagePushSecret) or a volumeSource", Rule.TUNING_OUTPUT)
            return
        if dest.image and dest.volume_source:
            self.error("tuning.output", "set either image or volumeSource, not both", Rule.TUNING_OUTPUT)
        elif not dest.image and not dest.volume_source:
            self.error("tuning.output", "set image (with imagePushSecret) or volumeSource", Rule.TUNING_OUTPUT)
        if dest.volume_source:
            self.check_volume_source(dest.volume_source, "tuning.output.volumeSource", named=False)
        if dest.image and not dest.image_push_secret:
            self.error("tuning.output.imagePushSecret",
                       f"required with tuning.output.image; name a Secret in this namespace "
                       f"(type kubernetes.io/dockerconfigjson) that can push to {dest.image.split('/')[0]}",
                       Rule.OUTPUT_PUSH_SECRET)
