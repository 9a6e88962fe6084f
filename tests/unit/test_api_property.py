"""Property: whatever document the validator gets, it answers with errors and never crashes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaito_core.api import FieldError, WorkspaceValidationError, check_workspace, validate_workspace
from kaito_core.api.webhook import admission_review

EXAMPLES = [yaml.safe_load(p.read_text()) for p in sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))]

KEYS = ["apiVersion", "kind", "metadata", "name", "annotations", "resource", "instanceType", "count",
        "labelSelector", "matchLabels", "matchExpressions", "preferredNodes", "inference", "tuning", "preset",
        "template", "adapters", "source", "strength", "image", "urls", "volumeSource", "imagePushSecret",
        "method", "input", "output", "presetOptions", "modelAccessSecret", "accessMode", "status",
        "kaito.sh/runtime", "kaito.sh/bypass-resource-checks"]
WORDS = ["phi-3-mini-4k-instruct", "falcon-40b", "llama-3.1-8b-instruct", "Standard_NC6s_v3", "g5.xlarge",
         "lora", "qlora", "private", "public", "true", "0.5", "1.5", "nan", "inf", "-0", "http://127.1/",
         "https://[::1", "http://[fe80::1%eth0]/", "ftp://x", "kaito.sh/v1alpha1", "Workspace", "vllm", ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(WORDS), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=6),
    ),
    max_leaves=40,
)


def _mutate(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    node: Any = doc
    for key in path[:-1]:
        if not isinstance(node, dict):
            return doc
        node = node.setdefault(key, {})
    if isinstance(node, dict) and path:
        node[path[-1]] = value
    return doc


near_valid = st.builds(
    _mutate, st.sampled_from(EXAMPLES),
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=4), documents,
)


def _checks(doc: Any, old: Any) -> None:
    errors = validate_workspace(doc, old)
    assert isinstance(errors, list) and all(isinstance(e, FieldError) for e in errors)
    try:
        check_workspace(doc, old)
    except WorkspaceValidationError as exc:
        assert exc.errors == errors
    else:
        assert errors == []
    review = {"request": {"uid": "u", "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"},
                          "operation": "UPDATE" if old is not None else "CREATE", "object": doc, "oldObject": old}}
    answer = admission_review(review)["response"]
    assert answer["allowed"] is (not errors) or old is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, old=st.one_of(st.none(), documents))
def test_random_documents_never_crash_the_validator(doc: Any, old: Any) -> None:
    _checks(doc, old)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=near_valid, old=st.one_of(st.none(), near_valid, st.sampled_from(EXAMPLES)))
def test_near_valid_documents_never_crash_the_validator(doc: Any, old: Any) -> None:
    _checks(doc, old)
