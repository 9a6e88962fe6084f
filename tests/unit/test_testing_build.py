"""kaito_core.testing.build: what happens without Go, with KUBEBUILDER_ASSETS, and how go.mod is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_core.testing import build
from kaito_core.testing.versions import staging_version

GOMOD = """module k8s.io/kubernetes

go 1.26.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
\tgithub.com/other/module => github.com/fork/module v1.0.0
)
"""


def test_staging_modules_are_read_from_go_mod() -> None:
    assert build._staging_replacements(GOMOD) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/kube-aggregator"]
    assert staging_version("v1.37.2") == "v0.37.2"


def test_without_go_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(build.ToolchainMissingError) as missing:
        build.ensure_binaries(("kube-apiserver",))
    text = str(missing.value)
    assert "Go is not installed" in text and "https://go.dev/dl/" in text
    assert "KUBEBUILDER_ASSETS" in text and "KAITO_TEST_KUBECONFIG" in text


def test_kubebuilder_assets_are_used_as_they_are(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert build.ensure_binaries(("etcd",)) == tmp_path  # nothing built, nothing checked beyond presence
    with pytest.raises(FileNotFoundError, match="lacks kube-apiserver"):
        build.ensure_binaries(("etcd", "kube-apiserver"))


def test_cache_folder_is_keyed_by_every_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    folder = build.asset_dir()
    assert folder.parent == tmp_path / "bin"
    for version in (build.KUBERNETES_VERSION, build.ETCD_VERSION, build.KWOK_VERSION):
        assert version in folder.name


def test_condition_helpers_read_object_dicts() -> None:
    from kaito_core.testing import condition, condition_is_true

    ws = {"status": {"conditions": [{"type": "ResourceReady", "status": "True"},
                                    {"type": "WorkspaceReady", "status": "False", "reason": "Pending"}]}}
    assert condition(ws, "WorkspaceReady") == {"type": "WorkspaceReady", "status": "False", "reason": "Pending"}
    assert condition_is_true(ws, "ResourceReady") and not condition_is_true(ws, "WorkspaceReady")
    assert condition(None, "X") is None and not condition_is_true({}, "ResourceReady")
