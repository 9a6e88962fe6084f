"""Building blocks shared by the Workspace and Machine types.

Every model reads and writes the camelCase keys Kubernetes uses (``instanceType``)
and also accepts the snake_case attribute names (``instance_type``). Unknown keys are
kept (``extra="allow"``) so a document round-trips unchanged; the apiserver prunes
fields the CRD schema does not know before they ever reach us.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Condition",
    "ConditionStatus",
    "KubeModel",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ObjectMeta",
]

ConditionStatus = Literal["True", "False", "Unknown"]


class KubeModel(BaseModel):
    """Base of every API model: camelCase aliases, names accepted too, unknown keys kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    @classmethod
    def from_dict(cls, obj: Any) -> Self:
        """Parse a Kubernetes-style dict (raises ``pydantic.ValidationError``)."""
        return cls.model_validate(obj)

    def to_dict(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """The object as a JSON-ready dict with camelCase keys and no null fields.

        ``exclude_unset=True`` leaves out defaults the input did not set, so a parsed
        manifest dumps back to exactly what was parsed.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=exclude_unset)


class ObjectMeta(KubeModel):
    """The metadata fields the controllers read; anything else is kept as is."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None


#: Bounds of a label selector in the CRDs (the validator checks keys and values as the apiserver does).
LABEL_KEY_MAX_LENGTH = 317  # a 253-character prefix, '/', a 63-character name
LABEL_VALUE_MAX_LENGTH = 63
SELECTOR_MAX_ITEMS = 64
_LABEL_VALUE: dict[str, Any] = {"type": "string", "maxLength": LABEL_VALUE_MAX_LENGTH}


class LabelSelectorRequirement(KubeModel):
    key: str = Field(json_schema_extra={"maxLength": LABEL_KEY_MAX_LENGTH})
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = Field(default=None, json_schema_extra={
        "maxItems": SELECTOR_MAX_ITEMS, "items": _LABEL_VALUE})


class LabelSelector(KubeModel):
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions`` are ANDed)."""

    match_labels: dict[str, str] | None = Field(default=None, json_schema_extra={
        "maxProperties": SELECTOR_MAX_ITEMS, "additionalProperties": _LABEL_VALUE})
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, json_schema_extra={"maxItems": SELECTOR_MAX_ITEMS})


class Condition(KubeModel):
    """A metav1.Condition: what is true now, why, and what a person should do about it."""

    type: str = Field(description="condition type, e.g. ResourceReady")
    status: ConditionStatus = Field(description="True, False or Unknown")
    reason: str | None = Field(default=None, description="a CamelCase reason")
    message: str | None = Field(default=None, description="for a person: what is wrong and what to do")
    last_transition_time: str | None = Field(
        default=None, description="when status last changed (RFC 3339)",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="the metadata.generation the condition was computed from")
