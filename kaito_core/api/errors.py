"""Validation errors, rule codes, and the messages shared by the validator and the CRD's CEL rules.

A :class:`FieldError` names the field (``resource.instanceType``) and says what is
wrong and what to do. The few rules the apiserver enforces itself (CEL) use the
same message text as the validator, so a person sees the same words whichever
layer caught the mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "FieldError",
    "Messages",
    "Rule",
    "WorkspaceValidationError",
]


class Rule:
    """Stable codes of the validation rules (``FieldError.rule``)."""

    SCHEMA: Final = "Schema"  # wrong type, missing required field, bad enum value
    INFERENCE_AND_TUNING: Final = "InferenceAndTuning"
    NEITHER_INFERENCE_NOR_TUNING: Final = "NeitherInferenceNorTuning"
    SWITCH_INFERENCE_TUNING: Final = "SwitchInferenceTuning"
    PRESET_AND_TEMPLATE: Final = "PresetAndTemplate"
    NEITHER_PRESET_NOR_TEMPLATE: Final = "NeitherPresetNorTemplate"
    UNKNOWN_PRESET: Final = "UnknownPreset"
    UNKNOWN_INSTANCE_TYPE: Final = "UnknownInstanceType"
    INSTANCE_TYPE_REQUIRED: Final = "InstanceTypeRequired"
    INSUFFICIENT_GPU_MEMORY: Final = "InsufficientGPUMemory"
    INSUFFICIENT_GPU_COUNT: Final = "InsufficientGPUCount"
    TOO_MANY_ADAPTERS: Final = "TooManyAdapters"
    DUPLICATE_ADAPTER: Final = "DuplicateAdapter"
    ADAPTER_SOURCE: Final = "AdapterSource"
    ADAPTERS_NEED_PRESET: Final = "AdaptersNeedPreset"
    ADAPTER_STRENGTH: Final = "AdapterStrength"
    TUNING_INPUT: Final = "TuningInput"
    TUNING_OUTPUT: Final = "TuningOutput"
    TUNING_PRESET_REQUIRED: Final = "TuningPresetRequired"
    INVALID_URL: Final = "InvalidURL"
    FORBIDDEN_URL: Final = "ForbiddenURL"
    OUTPUT_PUSH_SECRET: Final = "OutputPushSecret"
    TUNING_NOT_SUPPORTED: Final = "TuningNotSupported"
    TUNING_METHOD_NOT_SUPPORTED: Final = "TuningMethodNotSupported"
    GATED_PRESET: Final = "GatedPreset"
    PRIVATE_IMAGE_REQUIRED: Final = "PrivateImageRequired"
    UNKNOWN_RUNTIME: Final = "UnknownRuntime"
    INVALID_WEIGHTS_SOURCE: Final = "InvalidWeightsSource"
    IMMUTABLE: Final = "Immutable"
    INVALID_NAME: Final = "InvalidName"
    WRONG_KIND: Final = "WrongKind"
    POD_SECURITY: Final = "PodSecurity"  # privileged, escalation, host namespaces/ports, capabilities
    FORBIDDEN_VOLUME: Final = "ForbiddenVolume"  # hostPath, or a volume kind off the allow-list
    SERVICE_ACCOUNT: Final = "ServiceAccount"  # a ServiceAccount other than the namespace's default
    TOO_MANY_NODES: Final = "TooManyNodes"  # resource.count above MAX_NODE_COUNT
    INVALID_LABEL_SELECTOR: Final = "InvalidLabelSelector"  # keys/values the apiserver would refuse
    TUNING_MULTI_NODE: Final = "TuningMultiNode"  # resource.count above 1 with tuning (Kaito's rule)
    UNKNOWN_NODE_IMAGE_FAMILY: Final = "UnknownNodeImageFamily"  # kaito.sh/node-image-family off the list
    INVALID_API_KEY_SECRET: Final = "InvalidApiKeySecret"  # kaito.sh/api-key-secret not a Secret name or "none"
    INVALID_CONFIG: Final = "InvalidConfig"  # an inference.config / tuning.config ConfigMap's contents


class Messages:
    """Message texts used both by the validator and by the CRD's CEL rules."""

    INFERENCE_AND_TUNING: Final = (
        "set either inference or tuning, not both: a Workspace serves a model or tunes one; "
        "use two Workspaces for both")
    NEITHER_INFERENCE_NOR_TUNING: Final = (
        "set inference (to serve a model) or tuning (to fine-tune one); neither is set")
    SWITCH_INFERENCE_TUNING: Final = (
        "cannot switch a Workspace between inference and tuning; create a new Workspace instead")
    PRESET_AND_TEMPLATE: Final = (
        "set either inference.preset or inference.template, not both: use a preset from the catalog "
        "or your own pod template")
    NEITHER_PRESET_NOR_TEMPLATE: Final = (
        "set inference.preset (a model from the catalog) or inference.template (your own pod template)")
    IMMUTABLE: Final = "this field is immutable; delete the Workspace and create it again to change it"


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with a Workspace: where (``path``), what to do (``message``), which ``rule``."""

    path: str
    message: str
    rule: str = Rule.SCHEMA

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class WorkspaceValidationError(ValueError):
    """A Workspace failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__(self.summary())

    def summary(self) -> str:
        return "; ".join(str(error) for error in self.errors) or "invalid Workspace"

    def __str__(self) -> str:
        return self.summary()
