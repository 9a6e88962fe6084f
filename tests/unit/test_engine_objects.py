"""Views over object dicts: every field answers, absent or not; nothing is copied or changed."""

from __future__ import annotations

from kaito_core.engine import condition_of, conditions_of, meta, spec_of, status_of


def test_meta_view() -> None:
    obj = {"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "1"}, "finalizers": ["f"],
                        "deletionTimestamp": "2026-01-01T00:00:00Z", "generation": 3, "resourceVersion": "7"},
           "spec": {"x": 1}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    view = meta(obj)
    assert (view.name, view.namespace, view.generation, view.resource_version) == ("n", "ns", 3, "7")
    assert view.labels == {"a": "1"} and view.finalizers == ("f",) and view.deleting
    assert spec_of(obj) == {"x": 1}
    assert condition_of(obj, "Ready") == {"type": "Ready", "status": "True"} and condition_of(obj, "X") is None
    empty = meta({})
    assert (empty.name, empty.namespace, empty.labels, empty.annotations, empty.finalizers, empty.deleting) == (
        "", None, {}, {}, (), False)
    assert meta(None).name == "" and spec_of(None) == {} and status_of({"status": None}) == {}
    assert conditions_of({}) == ()
