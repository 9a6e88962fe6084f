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


def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all (so some documents parse)."""
    return st.integers(0, 24).flatmap(lambda pick: documents if pick == 0 else plausible)


def obj(required: tuple[str, ...] = (), **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return field(st.fixed_dictionaries({k: field(v) for k, v in fields.items() if k in required},
                                       optional={k: field(v) for k, v in fields.items() if k not in required}))


texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=10))
names = st.one_of(st.sampled_from(["a", "phi-3-adapter", "A_B", "x" * 70, ""]), st.text(max_size=8))
urls = st.one_of(st.sampled_from(WORDS), st.builds(lambda s, h, p: f"{s}://{h}/{p}",
                                                   st.sampled_from(["http", "https", "ftp", "HTTP"]),
                                                   st.one_of(st.sampled_from(["127.1", "[::1]", "10.0.0.1",
                                                                              "example.com", "[fe80::1%25x]",
                                                                              "0x7f.1", "1.2.3.4:99999", ""]),
                                                             st.text(max_size=10)),
                                                   st.text(max_size=5)))
strengths = st.one_of(st.sampled_from(["0", "0.5", "1", "1.0", "1.5", "-0", "nan", "inf", "1e400", "high",
                                       " .5 ", "1_0", "+1"]), st.text(max_size=6))
presets = obj(("name",), name=st.sampled_from(["phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "falcon-40b",
                                    "llama-3.1-8b-instruct", "phi-3-mini", "PHI-4"]),
              accessMode=st.sampled_from(["public", "private"]),
              presetOptions=obj(image=texts, imagePullSecrets=st.lists(texts, max_size=2),
                                modelAccessSecret=texts))
sources = obj(name=names, image=texts, urls=st.lists(urls, max_size=3),
              volumeSource=st.dictionaries(texts, documents, max_size=2), imagePullSecrets=st.lists(texts, max_size=2))
shaped = st.fixed_dictionaries(
    {"resource": obj(("labelSelector",), count=st.integers(0, 3), instanceType=st.sampled_from(
        ["Standard_NC6s_v3", "standard_nc4as_t4_v3", "Standard_NC24ads_A100_v4", "g5.xlarge", "nope"]),
        labelSelector=obj(matchLabels=st.dictionaries(texts, texts, max_size=2)),
        preferredNodes=st.lists(texts, max_size=2))},
    optional={
        "apiVersion": st.sampled_from(["kaito.sh/v1alpha1", "kaito.sh/v1beta1", "v1"]),
        "kind": st.sampled_from(["Workspace", "Machine"]),
        "metadata": obj(name=names, annotations=st.dictionaries(
            st.sampled_from(["kaito.sh/runtime", "kaito.sh/bypass-resource-checks", "x"]), texts, max_size=2)),
        "inference": obj(preset=presets, template=st.dictionaries(texts, documents, max_size=2), config=texts,
                         adapters=st.lists(obj(source=sources, strength=strengths), max_size=12)),
        "tuning": obj(preset=presets, method=st.sampled_from(["lora", "qlora"]), config=texts,
                      input=sources, output=obj(image=texts, imagePushSecret=texts,
                                                volumeSource=st.dictionaries(texts, documents, max_size=2))),
    },
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


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, old=st.one_of(st.none(), documents))
def test_random_documents_never_crash_the_validator(doc: Any, old: Any) -> None:
    _checks(doc, old)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=near_valid, old=st.one_of(st.none(), near_valid, st.sampled_from(EXAMPLES)))
def test_near_valid_documents_never_crash_the_validator(doc: Any, old: Any) -> None:
    _checks(doc, old)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=shaped, old=st.one_of(st.none(), shaped))
def test_workspace_shaped_documents_never_crash_the_validator(doc: Any, old: Any) -> None:
    _checks(doc, old)
