"""Weights from a Hugging Face repository: the real ``huggingface_hub.snapshot_download`` (in a real
``python -m kaito_presets.runtime.weights`` process) against the loopback hub of ``kaito_core.testing.hfhub``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaito_core.testing.hfhub import HubServer

from .test_weights import load_and_generate, model_files, snapshot

pytestmark = pytest.mark.runtime

REVISION = "3a7b1c9e0d2f4a6b8c0e1f2a3b4c5d6e7f8a9b0c"
TOKEN = "hf_kaitoTestToken0123456789"


@pytest.fixture(scope="module")
def hf_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model plus the folders Kaito's build script skips."""
    d = tmp_path_factory.mktemp("hf-repo") / "tiny"
    shutil.copytree(tiny_model, d)
    (d / "original").mkdir()
    (d / "original" / "consolidated.00.pth").write_bytes(b"\0" * 1024)
    (d / "metal").mkdir()
    (d / "metal" / "model.bin").write_bytes(b"\0" * 1024)
    return d


@pytest.fixture
def hub(hf_model: Path) -> Iterator[HubServer]:
    with HubServer(hf_model, repo="org/tiny", revision=REVISION, token=TOKEN) as h:
        yield h


def pull(hub: HubServer, dest: Path, tmp: Path, *, token: str | None, revision: str = REVISION, attempts: int = 3):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"), KAITO_TERMINATION_LOG=str(tmp / "termination-log"))
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "kaito_presets.runtime.weights", "pull", "--hf-repo", "org/tiny",
         "--revision", revision, "--dest", str(dest), "--attempts", str(attempts)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


def test_snapshot_of_a_pinned_revision_loads(hub: HubServer, tiny_model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    r = pull(hub, dest, tmp_path, token=TOKEN)
    assert r.returncode == 0, r.stderr
    assert model_files(dest) == model_files(tiny_model)  # original/** and metal/** skipped
    for name in model_files(tiny_model):
        assert (dest / name).read_bytes() == (tiny_model / name).read_bytes()
    assert json.loads((dest / ".kaito-weights.json").read_text()) == {
        "source": f"hf://org/tiny@{REVISION}",
        "digest": REVISION,
    }
    assert load_and_generate(dest)
    # What the client asked: the tree at the commit and each wanted file, nothing under original/ or metal/.
    tree = f"/api/models/org/tiny/tree/{REVISION}"
    resolve = {f"/org/tiny/resolve/{REVISION}/{n}" for n in model_files(tiny_model)}
    asked = {p for _, p in hub.requests}
    assert tree in asked and resolve <= asked
    assert asked <= {tree, "/api/agent-harnesses", *resolve}
    assert {p for m, p in hub.requests if m == "GET" and "/resolve/" in p} == resolve

    # Again: the marker says it is there; the hub is not asked anything.
    hub.clear_requests()
    before = snapshot(dest)
    r = pull(hub, dest, tmp_path, token=TOKEN)
    assert r.returncode == 0, r.stderr
    assert hub.requests == []
    assert snapshot(dest) == before


def test_a_wrong_token_names_the_repo_and_the_secret(hub: HubServer, tmp_path: Path) -> None:
    r = pull(hub, tmp_path / "w", tmp_path, token="hf_wrongWrongWrong")
    assert r.returncode == 1
    message = (tmp_path / "termination-log").read_text().strip()
    assert message == (
        f"Hugging Face refused the token for org/tiny@{REVISION} (401): check the Secret named in "
        "presetOptions.modelAccessSecret (its HF_TOKEN must have access to the repo)"
    )
    assert f"error: {message}" in r.stderr
    assert "hf_wrongWrongWrong" not in r.stderr + r.stdout + message
    # A 401 is not retried by us: one tree listing asked (the client itself does not retry a 401 either).
    assert [p for _, p in hub.requests if "/tree/" in p] == [f"/api/models/org/tiny/tree/{REVISION}"]


def test_no_token_for_a_gated_repo(hub: HubServer, tmp_path: Path) -> None:
    r = pull(hub, tmp_path / "w", tmp_path, token=None)
    assert r.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert f"org/tiny@{REVISION}" in message and "none was given" in message
    assert "presetOptions.modelAccessSecret" in message


def test_an_unknown_revision_is_named(hub: HubServer, tmp_path: Path) -> None:
    missing = "f" * 40
    r = pull(hub, tmp_path / "w", tmp_path, token=TOKEN, revision=missing)
    assert r.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert f"revision {missing} of Hugging Face repository org/tiny not found" in message
    assert [p for _, p in hub.requests if "/tree/" in p] == [f"/api/models/org/tiny/tree/{missing}"]


def test_a_branch_resolves_to_the_pinned_commit(hub: HubServer, tmp_path: Path) -> None:
    dest = tmp_path / "w"
    r = pull(hub, dest, tmp_path, token=TOKEN, revision="main")
    assert r.returncode == 0, r.stderr
    assert ("GET", "/api/models/org/tiny/revision/main") in hub.requests
    assert json.loads((dest / ".kaito-weights.json").read_text())["digest"] == REVISION


def test_the_hub_endpoints_directly(hub: HubServer, tiny_model: Path) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{hub.url}/org/tiny/resolve/{REVISION}"
    data = (tiny_model / "model.safetensors").read_bytes()
    head = httpx.head(f"{base}/model.safetensors", headers=auth)
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == REVISION
    assert int(head.headers["Content-Length"]) == len(data) == int(head.headers["X-Linked-Size"])
    assert head.headers["X-Linked-Etag"].strip('"') == __import__("hashlib").sha256(data).hexdigest()
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    part = httpx.get(f"{base}/model.safetensors", headers={**auth, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    missing = httpx.head(f"{base}/nope.json", headers=auth)
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    rev = httpx.get(f"{hub.url}/api/models/org/tiny/revision/{'0' * 40}", headers=auth)
    assert rev.status_code == 404 and rev.headers["X-Error-Code"] == "RevisionNotFound"
    bad_tree = httpx.get(f"{hub.url}/api/models/org/tiny/tree/{'0' * 40}", params={"recursive": "true"}, headers=auth)
    assert bad_tree.status_code == 404 and bad_tree.headers["X-Error-Code"] == "RevisionNotFound"
    assert httpx.get(f"{hub.url}/api/models/org/tiny/revision/main").status_code == 401
    info = httpx.get(f"{hub.url}/api/models/org/tiny/revision/main", headers=auth).json()
    assert info["sha"] == REVISION
    assert {s["rfilename"] for s in info["siblings"]} >= {"config.json", "original/consolidated.00.pth"}
    tree = httpx.get(f"{hub.url}/api/models/org/tiny/tree/{REVISION}", params={"recursive": "false"}, headers=auth)
    entries = {e["path"]: e for e in tree.json()}
    assert entries["original"]["type"] == "directory" and "original/consolidated.00.pth" not in entries
    assert entries["model.safetensors"]["lfs"]["oid"] == head.headers["X-Linked-Etag"].strip('"')
    assert "xetHash" not in entries["model.safetensors"]
