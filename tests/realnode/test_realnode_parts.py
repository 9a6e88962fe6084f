"""The parts of kaito_core.testing.realnode that need no root: the sandbox image, log parsing, configuration."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from kaito_core.testing import build, build_node, realnode
from kaito_core.testing.realnode import pause, spec

pytestmark = pytest.mark.realnode


def test_the_pause_archive_is_an_oci_layout_with_path_and_entrypoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "pause"
    fake.write_bytes(b"\x7fELF-not-really")
    monkeypatch.setattr(pause, "ensure_pause_binary", lambda: fake)
    archive = pause._pause_archive(tmp_path / "images")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]

        def blob(digest: str) -> bytes:
            return tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read()  # type: ignore[union-attr]

        (entry,) = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == realnode.pause_image_ref()
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        assert config["config"]["Entrypoint"] == ["/pause"]
        assert any(env.startswith("PATH=") for env in config["config"]["Env"])
        import gzip
        import io

        (layer,) = manifest["layers"]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as inner:
            member = inner.getmember("pause")
            assert member.mode == 0o755 and inner.extractfile(member).read() == fake.read_bytes()  # type: ignore[union-attr]
    assert "oci-layout" in names
    assert pause._pause_archive(tmp_path / "images") == archive  # cached
    assert realnode.pause_image_ref() == f"localhost/kaito-pause:{build_node.pause_hash()}"


def test_cri_logs_join_partial_lines() -> None:
    raw = ("2026-01-01T00:00:00.1Z stdout F hello\n"
           "2026-01-01T00:00:00.2Z stdout P part one, \n"
           "2026-01-01T00:00:00.3Z stdout F part two\n"
           "2026-01-01T00:00:00.4Z stderr F \n")
    assert realnode.parse_cri_log(raw) == "hello\npart one, part two\n\n"


def test_a_kubeconfig_that_is_not_on_loopback_is_refused(tmp_path: Path) -> None:
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": "/ca"}}],
        "users": [{"name": "u", "user": {"client-certificate": "/c", "client-key": "/k"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        spec._read_kubeconfig(path)
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:6443"  # type: ignore[index]
    path.write_text(yaml.safe_dump(config))
    assert spec._read_kubeconfig(path).server_port == 6443


def test_node_binaries_missing_from_kubebuilder_assets_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="lacks kubelet, kube-proxy"):
        build_node.ensure_node_binaries()


def test_without_go_the_node_build_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.ToolchainMissingError, match="Go is not installed"):
        build_node.ensure_node_binaries()
    assert build_node.containerd_dir().name == f"containerd-{build_node.CONTAINERD_VERSION}"
