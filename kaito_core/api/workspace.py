"""The Workspace: one large model served (``inference``) or fine-tuned (``tuning``) on GPU nodes.

Fields are top-level, like Kaito's (no ``spec``)::

    apiVersion: kaito.sh/v1alpha1
    kind: Workspace
    metadata: {name: workspace-phi-3-mini}
    resource:  {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {apps: phi-3}}}
    inference: {preset: {name: phi-3-mini-4k-instruct}}

Two versions are served, ``v1alpha1`` and ``v1beta1`` (stored). They have the same
schema, so the CRD's conversion strategy is ``None``: the apiserver only rewrites
``apiVersion``. :class:`Workspace` parses either; :class:`WorkspaceV1Alpha1` is the
same model whose ``apiVersion`` defaults to v1alpha1.

The ``json_schema_extra`` entries carry what only the CRD needs (CEL rules,
preserved unknown fields); :mod:`kaito_core.api.crd` turns these models into the CRD.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from kaito_core.api.common import Condition, KubeModel, LabelSelector, ObjectMeta
from kaito_core.api.constants import (
    ANNOTATION_RUNTIME,
    GROUP,
    MAX_ADAPTERS,
    MAX_NODE_COUNT,
    V1ALPHA1,
    WORKSPACE_API_VERSION,
    WORKSPACE_KIND,
)
from kaito_core.api.errors import Messages

__all__ = [
    "AccessMode",
    "AdapterSpec",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "PresetOptions",
    "PresetSpec",
    "ResourceSpec",
    "TuningMethod",
    "TuningSpec",
    "Workspace",
    "WorkspaceStatus",
    "WorkspaceV1Alpha1",
]

AccessMode = Literal["public", "private"]
TuningMethod = Literal["lora", "qlora"]

_PRESERVE: JsonDict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

# Bounds on every free string and list of the spec: the CRD carries them (so the apiserver can bound the
# cost of its CEL rules and refuse a megabyte of garbage) and the validator enforces the same ones.
#: A Kubernetes object name (Secret, ConfigMap, Node), an instance type, a preset name.
NAME_MAX_LENGTH = 253
#: An image reference (registry, repository, tag or digest).
IMAGE_MAX_LENGTH = 1024
#: A URL of tuning data, a pre-signed query string included.
URL_MAX_LENGTH = 8192
#: Items of a list in the spec (URLs, pull secrets, preferred nodes).
LIST_MAX_ITEMS = 100

Name = Annotated[str, Field(max_length=NAME_MAX_LENGTH)]
Image = Annotated[str, Field(max_length=IMAGE_MAX_LENGTH)]
Url = Annotated[str, Field(max_length=URL_MAX_LENGTH)]


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _same_optional(field: str) -> str:
    """CEL: an optional scalar field keeps its value (set or unset) across an update."""
    return (f"(has(self.{field}) ? self.{field} : '') == "
            f"(has(oldSelf.{field}) ? oldSelf.{field} : '')")


class ResourceSpec(KubeModel):
    """The GPU nodes to run on: how many, of which instance type, with which labels."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel(_same_optional("instanceType"), Messages.IMMUTABLE, ".instanceType"),
        _cel("self.labelSelector == oldSelf.labelSelector",
             Messages.IMMUTABLE, ".labelSelector"),
    ]})

    count: int = Field(default=1, ge=1, json_schema_extra={"maximum": MAX_NODE_COUNT},
                       description=f"Number of GPU nodes (at most {MAX_NODE_COUNT}).")
    instance_type: Name | None = Field(
        default=None,
        description="GPU instance type (VM size) of the nodes, e.g. Standard_NC6s_v3 or g5.xlarge. "
                    "Immutable.")
    label_selector: LabelSelector = Field(
        description="Labels the GPU nodes must carry; nodes kaito-core provisions get them. Immutable.")
    preferred_nodes: list[Name] | None = Field(
        default=None, max_length=LIST_MAX_ITEMS,
        description="Existing nodes to use first, by name; nodes without the labels are ignored.")


class PresetOptions(KubeModel):
    image: Image | None = Field(default=None, description="Model image to use (required with accessMode private).")
    image_pull_secrets: list[Name] | None = Field(
        default=None, max_length=LIST_MAX_ITEMS, description="Secrets in this namespace for pulling the model image.")
    model_access_secret: Name | None = Field(
        default=None,
        description="Secret in this namespace with a Hugging Face token (key HF_TOKEN); "
                    "required for gated models.")


class PresetSpec(KubeModel):
    """A model from the preset catalog (`kaito presets` lists them)."""

    name: Name = Field(description="Name of the model preset, e.g. phi-3-mini-4k-instruct.")
    access_mode: AccessMode = Field(
        default="public",
        description="public: kaito-core's image or weights; private: your image in presetOptions.image.")
    preset_options: PresetOptions | None = None


class DataSource(KubeModel):
    """Where data comes from: URLs, an image, or a volume (exactly one for tuning input)."""

    name: Name | None = Field(
        default=None, description="Name of the data; for adapters also the container name (DNS label).")
    urls: list[Url] | None = Field(default=None, max_length=LIST_MAX_ITEMS,
                                   description="Public http(s) URLs of the data files.")
    volume_source: dict[str, Any] | None = Field(
        default=None, description="A Kubernetes VolumeSource holding the data.",
        json_schema_extra=_PRESERVE)
    image: Image | None = Field(default=None, description="An image with the data under /data.")
    image_pull_secrets: list[Name] | None = Field(
        default=None, max_length=LIST_MAX_ITEMS, description="Secrets in this namespace for pulling the image.")


class DataDestination(KubeModel):
    """Where tuning output goes: an image (with a push secret) or a volume."""

    volume_source: dict[str, Any] | None = Field(
        default=None, description="A Kubernetes VolumeSource to write the output to.",
        json_schema_extra=_PRESERVE)
    image: Image | None = Field(default=None, description="Image to push the adapter to.")
    image_push_secret: Name | None = Field(
        default=None, description="Secret in this namespace that can push to the output image's registry.")


class AdapterSpec(KubeModel):
    source: DataSource | None = Field(default=None, description="Where the adapter comes from (an image).")
    strength: str | None = Field(
        default=None, max_length=32,
        description='Multiplier for the adapter weights, a number from 0 to 1 written as a string ("0.5").')


class InferenceSpec(KubeModel):
    """Serve a model: a preset (optionally with adapters) or your own pod template."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!(has(self.preset) && has(self.template))", Messages.PRESET_AND_TEMPLATE, ".template"),
        _cel("has(self.preset) || has(self.template)", Messages.NEITHER_PRESET_NOR_TEMPLATE),
        _cel("!has(self.preset) || !has(oldSelf.preset) || self.preset.name == oldSelf.preset.name",
             Messages.IMMUTABLE, ".preset.name"),
    ]})

    preset: PresetSpec | None = None
    template: dict[str, Any] | None = Field(
        default=None, description="A PodTemplateSpec running your own inference server.",
        json_schema_extra=_PRESERVE)
    config: Name | None = Field(
        default=None, description="ConfigMap in this namespace with inference arguments.")
    # The CRD bounds the list's size (LIST_MAX_ITEMS); the limit of 10 is the validator's (TooManyAdapters),
    # which says so in its own words at admission
    adapters: list[AdapterSpec] | None = Field(
        default=None, json_schema_extra={"maxItems": LIST_MAX_ITEMS},
        description=f"LoRA adapters to load on top of the preset (at most {MAX_ADAPTERS}).")


class TuningSpec(KubeModel):
    """Fine-tune a preset with LoRA or QLoRA on input data; push the adapter to output."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel(_same_optional("method"), Messages.IMMUTABLE, ".method"),
        _cel("!has(self.preset) || !has(oldSelf.preset) || self.preset.name == oldSelf.preset.name",
             Messages.IMMUTABLE, ".preset.name"),
    ]})

    preset: PresetSpec | None = None
    method: TuningMethod = Field(
        default="lora", description="lora, or qlora (4-bit base model: less GPU memory). Immutable.")
    config: Name | None = Field(default=None, description="ConfigMap in this namespace with tuning arguments.")
    input: DataSource | None = Field(default=None, description="Training data: urls, image or volumeSource.")
    output: DataDestination | None = Field(
        default=None, description="Where the adapter goes: image (+ imagePushSecret) or volumeSource.")


class WorkspaceStatus(KubeModel):
    worker_nodes: list[str] | None = Field(default=None, description="Nodes the workload runs on.")
    conditions: list[Condition] | None = Field(
        default=None, description="ResourceReady, InferenceReady, JobStarted, WorkspaceSucceeded, WorkspaceReady.")
    state: str | None = Field(default=None, description="One word for the whole Workspace, e.g. Ready.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes.")


class Workspace(KubeModel):
    """A large model on GPU nodes: served (inference) or fine-tuned (tuning).

    Parses either served version; apiVersion defaults to the storage version.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!(has(self.inference) && has(self.tuning))", Messages.INFERENCE_AND_TUNING, ".tuning"),
        _cel("has(self.inference) || has(self.tuning)", Messages.NEITHER_INFERENCE_NOR_TUNING),
        _cel("has(self.inference) == has(oldSelf.inference)", Messages.SWITCH_INFERENCE_TUNING),
    ]})

    api_version: str = Field(default=WORKSPACE_API_VERSION, alias="apiVersion")
    kind: str = WORKSPACE_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    # conveniences for the reconcilers
    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.annotations or {})

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.labels or {})

    @property
    def version(self) -> str:
        """The version part of apiVersion (``v1beta1``)."""
        return self.api_version.rpartition("/")[2]

    @property
    def is_inference(self) -> bool:
        return self.inference is not None

    @property
    def is_tuning(self) -> bool:
        return self.tuning is not None

    @property
    def preset(self) -> PresetSpec | None:
        """The preset of inference or tuning, whichever is set."""
        if self.inference is not None and self.inference.preset is not None:
            return self.inference.preset
        if self.tuning is not None:
            return self.tuning.preset
        return None

    @property
    def runtime(self) -> str | None:
        """The runtime the ``kaito.sh/runtime`` annotation asks for, if any."""
        return (self.metadata.annotations or {}).get(ANNOTATION_RUNTIME)

    def spec_dict(self) -> dict[str, Any]:
        """The desired state only (resource, inference, tuning): what a revision hash covers."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True,
                               include={"resource", "inference", "tuning"})


class WorkspaceV1Alpha1(Workspace):
    """The same Workspace, written as ``kaito.sh/v1alpha1`` by default."""

    api_version: str = Field(default=f"{GROUP}/{V1ALPHA1}", alias="apiVersion")
