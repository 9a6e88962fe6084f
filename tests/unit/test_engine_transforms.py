"""keep_fields: the declarative cache transform (what it keeps, what it refuses), and SharedCache's
one-transform-per-kind rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kaito_core.engine import CONFIGMAP, NODE, ApiClientTransport, Client, SharedCache
from kaito_core.engine.transforms import compile_fields, keep_fields, strip_managed_fields


def obj() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Thing",
            "metadata": {"name": "a", "resourceVersion": "3", "managedFields": [{"manager": "m"}]},
            "spec": {"keep": {"deep": 1}, "drop": 2},
            "status": {"items": [{"name": "x", "state": {"s": 1}, "noise": "n"}, {"name": "y"}, "odd"],
                       "phase": "Up", "big": ["b"] * 10}}


def test_keeps_exactly_the_declared_paths() -> None:
    transform = keep_fields("metadata", "spec.keep", "status.items[].name", "status.items[].state", "status.none")
    assert transform(obj()) == {
        "apiVersion": "v1", "kind": "Thing",
        "metadata": {"name": "a", "resourceVersion": "3"},  # managedFields never
        "spec": {"keep": {"deep": 1}},
        "status": {"items": [{"name": "x", "state": {"s": 1}}, {"name": "y"}, "odd"]},  # absent stays absent
    }


def test_a_whole_value_wins_over_a_deeper_path_and_types_not_declared_are_kept() -> None:
    transform = keep_fields("metadata", "status.items[].name", "status.items", "spec.keep.deep")
    out = transform(obj())
    assert out["status"] == {"items": obj()["status"]["items"]}
    assert out["spec"] == {"keep": {"deep": 1}}
    odd = transform({"metadata": {"name": "b"}, "status": {"items": "not a list"}, "spec": "not a map"})
    assert odd == {"metadata": {"name": "b"}, "status": {"items": "not a list"}, "spec": "not a map"}


def test_the_declaration_reads_back() -> None:
    shape = compile_fields(["metadata", "status.items[].name", "status.phase", "status.items[].state"])
    assert shape.paths() == ["metadata", "status.items[].name", "status.items[].state", "status.phase"]
    assert "status.phase" in keep_fields("metadata", "status.phase").__name__


@pytest.mark.parametrize(("paths", "words"), [
    (("spec.x",), "must keep 'metadata' whole"),
    (("metadata.name", "spec.x"), "must keep 'metadata' whole"),
    (("metadata", "status..x"), "segment '' is not a key"),
    (("metadata", "status.x[0]"), "'x[0]' is not a key"),
    (("metadata", "status.x[].a", "status.x.b"), "both as a list"),
    (("metadata", ""), "expected a dotted path"),
    ((), "at least one path"),
])
def test_a_bad_declaration_names_the_path_and_the_fix(paths: tuple[str, ...], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        keep_fields(*paths)


def test_the_default_transform_only_drops_managed_fields() -> None:
    out = strip_managed_fields(obj())
    assert "managedFields" not in out["metadata"] and out["spec"]["drop"] == 2


@pytest.fixture
async def cache(tmp_path: Path) -> Any:
    """A SharedCache never started: its client points nowhere and is never called."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    client = Client(await ApiClientTransport.from_kubeconfig(kubeconfig))
    try:
        yield SharedCache(client, transforms={CONFIGMAP: keep_fields("metadata", "data")})
    finally:
        await client.close()


async def test_one_transform_per_kind(cache: SharedCache) -> None:
    assert cache.informer(CONFIGMAP).transform is cache.transform_for(CONFIGMAP)
    assert cache.informer(NODE).transform is strip_managed_fields  # undeclared kinds: the default
    nodes = keep_fields("metadata", "spec.taints")
    cache.set_transform(NODE, nodes)
    cache.set_transform(NODE, nodes)  # the same declaration again (a second controller): fine
    assert cache.informer(NODE).transform is nodes
    with pytest.raises(ValueError, match="one transform per kind with the union"):
        cache.set_transform(NODE, keep_fields("metadata", "spec.taints"))
