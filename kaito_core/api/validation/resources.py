"""Resource checks of the validator: node count, instance type, label selector, and whether the
preset fits; the preset and runtime checks inference and tuning share.
"""

from __future__ import annotations

from kaito_presets import RUNTIME_TRANSFORMERS, RUNTIMES, ModelPreset, format_quantity
from kaito_presets.sizing import nodes_needed

from kaito_core.api.constants import ANNOTATION_BYPASS_RESOURCE_CHECKS, ANNOTATION_RUNTIME, MAX_NODE_COUNT
from kaito_core.api.errors import Rule
from kaito_core.api.validation.fields import RESERVED_SELECTOR_LABELS, _WorkspaceChecks
from kaito_core.api.workspace import PresetSpec


class _ResourceChecks(_WorkspaceChecks):
    """Resource checks: what the Workspace runs on; a preset's lookup and whether it fits there."""

    def check_resource(self) -> None:
        resource = self.ws.resource
        if resource.count > MAX_NODE_COUNT:
            self.error("resource.count", f"{resource.count} nodes asked for; at most {MAX_NODE_COUNT} are allowed "
                       "per Workspace; lower count, or spread the work over several Workspaces",
                       Rule.TOO_MANY_NODES)
        self.check_label_selector(resource.label_selector, "resource.labelSelector")
        if resource.instance_type is not None:
            if self.bypass:
                return
            self.sku = self.catalog.find_sku(resource.instance_type)
            if self.sku is None:
                close = self.catalog.close_sku_names(resource.instance_type)
                hint = (f"did you mean {', '.join(close)}?" if close else "use a GPU instance type from the "
                        "catalog, e.g. Standard_NC24ads_A100_v4 or g5.xlarge (`kaito presets` shows what fits)")
                self.error("resource.instanceType",
                           f"unknown GPU instance type {resource.instance_type!r}; {hint} (for nodes the "
                           f"catalog does not know, set the annotation {ANNOTATION_BYPASS_RESOURCE_CHECKS}: "
                           "\"true\")", Rule.UNKNOWN_INSTANCE_TYPE)
        elif not resource.preferred_nodes and not self.user_selector(resource.label_selector):
            # Bring-your-own by labels (Kaito's BYO): the selector picks the nodes and their GPU feature
            # discovery labels say what they have; an empty selector would pick every node of the cluster.
            self.error("resource.instanceType",
                       "required unless resource.labelSelector picks your own GPU nodes (they need the NVIDIA "
                       "GPU feature discovery labels nvidia.com/gpu.product, nvidia.com/gpu.count, "
                       "nvidia.com/gpu.memory) or resource.preferredNodes lists them; set the instance type to "
                       "provision, e.g. Standard_NC24ads_A100_v4 or g5.xlarge", Rule.INSTANCE_TYPE_REQUIRED)
        match_labels = resource.label_selector.match_labels or {}
        if match_labels and all(key in RESERVED_SELECTOR_LABELS for key in match_labels):
            self.error("resource.labelSelector.matchLabels",
                       f"must contain at least one label not reserved by kaito ({', '.join(RESERVED_SELECTOR_LABELS)}"
                       " say which Workspace or Machine a node was made for; a selector of only those picks "
                       "another Workspace's nodes); add a label of your own, e.g. apps: my-model",
                       Rule.INVALID_LABEL_SELECTOR)

    def preset(self, spec: PresetSpec, path: str) -> ModelPreset | None:
        found = self.catalog.find_model(spec.name)
        if found is None:
            close = self.catalog.close_model_names(spec.name)
            # A Hugging Face id the hub could not size: say why (unreachable, gated, no config).
            why = self.catalog.unresolved_reason(spec.name)
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"{why}" if why else "`kaito presets` lists them, or give a Hugging Face id (org/model)")
            self.error(f"{path}.name", f"unknown preset {spec.name!r}; {hint}", Rule.UNKNOWN_PRESET)
            return None
        options = spec.preset_options
        if spec.access_mode == "private" and not (options and options.image):
            self.error(f"{path}.presetOptions.image",
                       "required when accessMode is private; give the image that holds the model weights "
                       "(and imagePullSecrets to pull it)", Rule.PRIVATE_IMAGE_REQUIRED)
        if found.gated and spec.access_mode == "public" and not (options and options.model_access_secret):
            self.error(f"{path}.presetOptions.modelAccessSecret",
                       f"{found.name} is gated on Hugging Face ({found.huggingface_id}); accept its licence on "
                       "the model page, store your Hugging Face token in a Secret in this namespace "
                       "(key HF_TOKEN) and name that Secret here", Rule.GATED_PRESET)
        return found

    def check_fit(self, preset: ModelPreset, need_memory: int, need_gpus: int, what: str,
                  alternative: str | None = None) -> None:
        """The instance type has enough GPU memory and GPUs for ``preset`` (one error at most)."""
        sku = self.sku
        if sku is None or self.bypass:
            return
        nodes = self.ws.resource.count if (preset.distributed_inference and what == "inference") else 1
        have_memory, have_gpus = sku.gpu_memory * nodes, sku.gpu_count * nodes
        if have_memory >= need_memory and have_gpus >= need_gpus:
            return
        fits = self.catalog.suggest_skus(need_memory, need_gpus, cloud=sku.cloud)
        tries = [alternative] if alternative else []
        if preset.distributed_inference and what == "inference":
            # A preset that splits across nodes fits on enough of them: say how many.
            tries.append(f"resource.count: {nodes_needed(sku, need_memory, need_gpus)}")
        tries += [fits[0].name] if fits else []
        try_text = f"; try {' or '.join(tries)}" if tries else "; no single instance type in the catalog is big enough"
        subject = sku.name if nodes == 1 else f"{nodes} x {sku.name}"
        verb = "has" if nodes == 1 else "have"
        purpose = "" if what == "inference" else f" for {what}"
        if have_memory < need_memory:
            self.error("resource.instanceType",
                       f"{subject} {verb} {format_quantity(have_memory)} GPU memory; {preset.name} needs "
                       f"{format_quantity(need_memory)}{purpose}{try_text}", Rule.INSUFFICIENT_GPU_MEMORY)
        else:
            plural = "GPU" if have_gpus == 1 else "GPUs"
            self.error("resource.instanceType",
                       f"{subject} {verb} {have_gpus} {plural}; {preset.name} needs {need_gpus}{purpose}{try_text}",
                       Rule.INSUFFICIENT_GPU_COUNT)

    def check_runtime(self, preset: ModelPreset | None) -> None:
        runtime = (self.ws.metadata.annotations or {}).get(ANNOTATION_RUNTIME)
        if runtime is None:
            return
        allowed = preset.runtimes if preset is not None else RUNTIMES
        if runtime not in allowed:
            subject = f"{preset.name} runs with" if preset is not None else "use"
            self.error(f"metadata.annotations[{ANNOTATION_RUNTIME}]",
                       f"unknown runtime {runtime!r}; {subject} {' or '.join(allowed)}", Rule.UNKNOWN_RUNTIME)


def resolve_runtime(wanted: str | None, default: str | None, preset: ModelPreset | None) -> str:
    """The runtime a Workspace's pods run: the ``kaito.sh/runtime`` annotation, else the operator's
    ``default_runtime``, when the preset offers it; else the preset's own default (transformers
    for a pod template, which has no preset). The one rule: the reconciler builds pods with it and
    the validator judges runtime-specific fields (adapter strength) with it."""
    wanted = wanted or default
    if preset is None:
        return wanted or RUNTIME_TRANSFORMERS
    if wanted and wanted in preset.runtimes:
        return wanted
    return preset.default_runtime
