"""The validator's shared state and its field checks: names, annotations, labels and selectors.

:class:`_WorkspaceChecks` holds what every check needs (the Workspace, the catalog, the
errors found so far, whether resource checks are bypassed, the instance type found) and
records an error; the other check classes of this package build on it.
"""

from __future__ import annotations

import re

from kaito_presets import Catalog, GpuSku

from kaito_core.api.common import LabelSelector
from kaito_core.api.constants import (
    ANNOTATION_API_KEY_SECRET,
    ANNOTATION_BYPASS_RESOURCE_CHECKS,
    ANNOTATION_NODE_IMAGE_FAMILY,
    GROUP,
    LABEL_MACHINE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    WORKSPACE_KIND,
    WORKSPACE_VERSIONS,
)
from kaito_core.api.errors import FieldError, Rule
from kaito_core.api.weights import ANNOTATION_MODEL_WEIGHTS, parse_weights_source
from kaito_core.api.workspace import Workspace

# Every pattern is used with fullmatch: "$" would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
#: Labels kaito puts on the nodes it makes to say whose they are. A selector made only of these would pick
#: the nodes of another Workspace (Kaito refuses it too: "at least one non-reserved label").
RESERVED_SELECTOR_LABELS = (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, LABEL_MACHINE)
#: Values of kaito.sh/node-image-family a provisioner knows (Kaito's list; compared ignoring case and spaces).
NODE_IMAGE_FAMILIES = ("ubuntu", "azurelinux")


def _label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key the apiserver takes (``[prefix/]name``); None when it is one."""
    prefix, slash, name = key.rpartition("/")
    fine_prefix = not slash or (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix) is not None)
    if fine_prefix and 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name):
        return None
    return (f"{key!r} is not a valid label key: write an optional prefix (a lowercase DNS subdomain such as "
            "example.com) and '/', then a name of at most 63 characters, letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit")


class _WorkspaceChecks:
    """The state every check shares, :meth:`error`, and the identity, annotation and selector checks."""

    def __init__(self, ws: Workspace, catalog: Catalog, *, default_runtime: str | None = None):
        self.ws = ws
        self.catalog = catalog
        self.default_runtime = default_runtime
        self.errors: list[FieldError] = []
        annotations = ws.metadata.annotations or {}
        self.bypass = annotations.get(ANNOTATION_BYPASS_RESOURCE_CHECKS, "").lower() == "true"
        self.sku: GpuSku | None = None

    def error(self, path: str, message: str, rule: str) -> None:
        self.errors.append(FieldError(path, message, rule))

    def check_api_key_secret(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_API_KEY_SECRET)
        if value is None or value.strip().lower() == "none":
            return
        if not (0 < len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value)):
            self.error(f"metadata.annotations[{ANNOTATION_API_KEY_SECRET}]",
                       f"{value!r} is not a Secret name; name a Secret in this namespace whose key \"api-key\" "
                       "holds the bearer token (kubectl create secret generic NAME --from-literal=api-key=TOKEN), "
                       "or \"none\" to serve without authentication", Rule.INVALID_API_KEY_SECRET)

    def check_node_image_family(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_NODE_IMAGE_FAMILY)
        if value is not None and value.strip().lower() not in NODE_IMAGE_FAMILIES:
            self.error(f"metadata.annotations[{ANNOTATION_NODE_IMAGE_FAMILY}]",
                       f"unsupported node image family {value!r}; use one of {', '.join(NODE_IMAGE_FAMILIES)} "
                       "(the node images the provisioners can make GPU nodes from), or remove the annotation",
                       Rule.UNKNOWN_NODE_IMAGE_FAMILY)

    def check_weights(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_MODEL_WEIGHTS)
        if value is None:
            return
        path = f"metadata.annotations[{ANNOTATION_MODEL_WEIGHTS}]"
        spec = self.ws.inference.preset if self.ws.inference is not None else (
            self.ws.tuning.preset if self.ws.tuning is not None else None)
        if spec is None:
            self.error(path, "names where a preset's weights come from, and this Workspace has no preset; "
                       "remove the annotation (a pod template brings its own model)", Rule.INVALID_WEIGHTS_SOURCE)
            return
        try:
            parse_weights_source(value)
        except ValueError as exc:
            self.error(path, str(exc), Rule.INVALID_WEIGHTS_SOURCE)

    # identity
    def check_identity(self) -> None:
        ws = self.ws
        versions = {f"{GROUP}/{v}" for v in WORKSPACE_VERSIONS}
        if ws.api_version not in versions:
            self.error("apiVersion", f"{ws.api_version!r} is not a Workspace version; use one of "
                       f"{', '.join(sorted(versions))}", Rule.WRONG_KIND)
        if ws.kind != WORKSPACE_KIND:
            self.error("kind", f"{ws.kind!r} is not {WORKSPACE_KIND}", Rule.WRONG_KIND)
        name = ws.metadata.name
        if name is not None and (len(name) > 63 or not _DNS_1035.fullmatch(name)):
            self.error("metadata.name", f"{name!r} is not a valid Workspace name: use at most 63 lowercase "
                       "letters, digits and '-', starting with a letter (the inference Service is named "
                       "after the Workspace)", Rule.INVALID_NAME)

    @staticmethod
    def user_selector(selector: LabelSelector) -> bool:
        """The selector has a term of the user's own (not only kaito's reserved labels)."""
        keys = [*(selector.match_labels or {}), *(r.key for r in selector.match_expressions or ())]
        return any(key not in RESERVED_SELECTOR_LABELS for key in keys)

    def check_label_selector(self, selector: LabelSelector, path: str) -> None:
        """Keys and values as the apiserver checks them (they become the labels of the Machines' nodes)."""
        for key, value in (selector.match_labels or {}).items():
            problem = _label_key_problem(key)
            if problem is not None:
                self.error(f"{path}.matchLabels", problem, Rule.INVALID_LABEL_SELECTOR)
            else:
                self.check_label_value(value, f"{path}.matchLabels[{key}]")
        for index, requirement in enumerate(selector.match_expressions or ()):
            where = f"{path}.matchExpressions[{index}]"
            problem = _label_key_problem(requirement.key)
            if problem is not None:
                self.error(f"{where}.key", problem, Rule.INVALID_LABEL_SELECTOR)
            operator, values = requirement.operator, requirement.values or []
            if operator in ("In", "NotIn") and not values:
                self.error(f"{where}.values", f"required with operator {operator}: list the values to match",
                           Rule.INVALID_LABEL_SELECTOR)
            elif operator in ("Exists", "DoesNotExist") and values:
                self.error(f"{where}.values", f"must be empty with operator {operator}; remove values",
                           Rule.INVALID_LABEL_SELECTOR)
            for number, value in enumerate(values):
                self.check_label_value(value, f"{where}.values[{number}]")

    def check_label_value(self, value: str, path: str) -> None:
        if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            self.error(path, f"{value!r} is not a valid label value: use at most 63 characters, letters, digits, "
                       "'-', '_' or '.', beginning and ending with a letter or digit (or leave it empty)",
                       Rule.INVALID_LABEL_SELECTOR)
