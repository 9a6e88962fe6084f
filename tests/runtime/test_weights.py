"""Model weights as CNCF ModelPack OCI artifacts: publish the tiny model to Debian's docker-registry on
loopback, pull it with ``python -m kaito_presets.runtime.weights`` (a real process), load it with transformers.

A counting HTTP proxy sits between the puller and the registry where a test needs to know how many requests
were made (no retries for 404/401, none at all for a cached pull) or needs the registry to fail for a while."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kaito_core.testing import free_port

from .conftest import Registry

pytestmark = pytest.mark.runtime

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
REPO = "kaito-phi-3-mini-4k-instruct"


# ----------------------------------------------------------------------------------- helpers


def weights(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaito_presets.runtime.weights", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class Proxy:
    """A counting reverse proxy to ``upstream``; the first ``fail_first`` requests get ``fail_status``."""

    def __init__(self, upstream: str, fail_first: int = 0, fail_status: int = 503) -> None:
        self.upstream = upstream
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self, method: str | None = None) -> list[str]:
        with self.lock:
            return [p for m, p, _ in self.requests if method is None or m == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                import requests

                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                with proxy.lock:
                    failing = proxy.fail_first > 0
                    if failing:
                        proxy.fail_first -= 1
                if failing:
                    proxy.requests.append((self.command, self.path, proxy.fail_status))
                    self.send_response(proxy.fail_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.request(
                    self.command,
                    f"http://{proxy.upstream}{self.path}",
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, r.status_code))
                content = r.content
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        continue
                    self.send_header(k, v.replace(proxy.upstream, proxy.host) if k.lower() == "location" else v)
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward

        return H


@pytest.fixture
def proxy_to(request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Proxy] = []

    def make(reg: Registry, **kw: Any) -> Proxy:
        p = Proxy(reg.host, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def docker_config(path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def get_manifest(host: str, repo: str, tag: str, auth: tuple[str, str] | None = None) -> tuple[dict[str, Any], str]:
    import requests

    r = requests.get(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        auth=auth,
        timeout=10,
    )
    r.raise_for_status()
    return r.json(), r.headers["Docker-Content-Digest"]


def push_raw_manifest(host: str, repo: str, tag: str, layers: list[tuple[str, bytes, dict[str, str]]]) -> None:
    """Publish a hand-made ModelPack manifest (for layouts ``weights push`` never writes)."""
    import requests

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", timeout=10)
        loc = start.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{host}{loc}"
        put = requests.put(f"{loc}{'&' if '?' in loc else '?'}digest={digest}", data=data, timeout=10)
        assert put.status_code == 201, put.text
        return {"digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", **blob(b"{}")},
        "layers": [{"mediaType": mt, **blob(data), "annotations": ann} for mt, data, ann in layers],
    }
    r = requests.put(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        data=json.dumps(manifest),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert r.status_code == 201, r.text


def title(name: str) -> dict[str, str]:
    return {"org.opencontainers.image.title": name, "org.cncf.model.filepath": name}


def tar_of(files: dict[str, bytes], gz: bool = False) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue()


def snapshot(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*")) if p.is_file()}


def load_and_generate(model_dir: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = tok("Hello there", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    return str(tok.decode(out[0]))


def model_files(d: Path) -> set[str]:
    rels = (p.relative_to(d) for p in d.rglob("*") if p.is_file())
    return {r.as_posix() for r in rels if not any(part.startswith(".") for part in r.parts)}


@pytest.fixture(scope="module")
def published(registry: Registry, tiny_model: Path) -> str:
    image = f"{registry.host}/{REPO}:0.2.0"
    r = weights("push", "--src", str(tiny_model), "--image", image)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["event"] == "pushed"
    return image


# ------------------------------------------------------------------------------------- tests


def test_push_writes_the_modelpack_raw_layout(registry: Registry, tiny_model: Path, published: str) -> None:
    import requests

    manifest, digest = get_manifest(registry.host, REPO, "0.2.0")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    config = requests.get(f"http://{registry.host}/v2/{REPO}/blobs/{manifest['config']['digest']}", timeout=10)
    assert config.content == b"{}"
    by_title = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in manifest["layers"]}
    assert set(by_title) == model_files(tiny_model)  # one layer per file
    assert by_title["model.safetensors"]["mediaType"] == WEIGHT_RAW
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert by_title[name]["mediaType"] == CONFIG_RAW, name
    for name, layer in by_title.items():
        data = (tiny_model / name).read_bytes()
        ann = layer["annotations"]
        assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert layer["size"] == len(data)
        assert ann["org.cncf.model.filepath"] == name
        assert ann["org.cncf.model.file.mediatype.untested"] == "true"
        meta = json.loads(ann["org.cncf.model.file.metadata+json"])
        assert meta == {
            "name": name,
            "mode": 420,
            "uid": 0,
            "gid": 0,
            "size": len(data),
            "mtime": "1970-01-01T00:00:00Z",
            "typeflag": 0,
        }
    # The same directory published again is the same manifest (deterministic).
    again = weights("push", "--src", str(tiny_model), "--image", published)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["digest"] == digest


def test_pull_loads_and_a_second_pull_fetches_nothing(
    registry: Registry, tiny_model: Path, published: str, proxy_to: Any, tmp_path: Path
) -> None:
    _, digest = get_manifest(registry.host, REPO, "0.2.0")
    proxy = proxy_to(registry)
    image = f"{proxy.host}/{REPO}:0.2.0"
    dest = tmp_path / "workspace" / "weights"
    r = weights("pull", "--image", image, "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert model_files(dest) == model_files(tiny_model)
    for name in model_files(tiny_model):
        assert (dest / name).read_bytes() == (tiny_model / name).read_bytes()
    assert json.loads((dest / ".kaito-weights.json").read_text()) == {"source": image, "digest": digest}
    blobs = [p for p in proxy.paths("GET") if "/blobs/" in p]
    assert len(blobs) == len(model_files(tiny_model))
    assert load_and_generate(dest)

    # A restart (or a PVC cache) with the same source: no request at all, no file rewritten.
    before, count = snapshot(dest), len(proxy.paths())
    r = weights("pull", "--image", image, "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert len(proxy.paths()) == count
    assert snapshot(dest) == before


def test_another_source_clears_the_directory(registry: Registry, published: str, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "stale.safetensors").write_bytes(b"old")
    (dest / ".kaito-weights.json").write_text(json.dumps({"source": "somewhere/else:1", "digest": "sha256:0"}))
    r = weights("pull", "--image", published, "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert not (dest / "stale.safetensors").exists()
    assert json.loads((dest / ".kaito-weights.json").read_text())["source"] == published


def test_push_and_pull_with_credentials(auth_registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    cfg = auth_registry.docker_config(tmp_path / "secret" / ".dockerconfigjson")
    image = f"{auth_registry.host}/{REPO}:0.2.0"
    r = weights("push", "--src", str(tiny_model), "--image", image, "--docker-config", str(cfg))
    assert r.returncode == 0, r.stderr
    manifest, _ = get_manifest(auth_registry.host, REPO, "0.2.0", auth=(str(auth_registry.user), "s3cret-pw"))
    assert manifest["artifactType"] == ARTIFACT_TYPE
    dest = tmp_path / "weights"
    r = weights("pull", "--image", image, "--dest", str(dest), "--docker-config", str(cfg.parent))
    assert r.returncode == 0, r.stderr
    assert (dest / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()

    # Without the secret: a clear refusal naming the artifact.
    term = tmp_path / "termination-log"
    r = weights("pull", "--image", image, "--dest", str(tmp_path / "w2"), env={"KAITO_TERMINATION_LOG": str(term)})
    assert r.returncode == 1
    assert image in term.read_text() and "requires credentials" in term.read_text()


def test_a_wrong_password_fails_once_without_leaking_it(
    auth_registry: Registry, tiny_model: Path, proxy_to: Any, tmp_path: Path
) -> None:
    cfg = auth_registry.docker_config(tmp_path / "ok.json")
    assert weights("push", "--src", str(tiny_model), "--image", f"{auth_registry.host}/{REPO}:0.2.0",
                   "--docker-config", str(cfg)).returncode == 0  # fmt: skip
    proxy = proxy_to(auth_registry)
    image = f"{proxy.host}/{REPO}:0.2.0"
    bad = docker_config(tmp_path / "bad.json", proxy.host, str(auth_registry.user), "not-the-Password-42")
    term = tmp_path / "termination-log"
    r = weights(
        "pull", "--image", image, "--dest", str(tmp_path / "w"), "--docker-config", str(bad), "--attempts", "3",
        env={"KAITO_TERMINATION_LOG": str(term)},
    )  # fmt: skip
    assert r.returncode == 1
    message = term.read_text()
    assert image in message and "refused the credentials" in message and "401" in message
    assert message.strip() in r.stderr
    assert "not-the-Password-42" not in r.stderr + r.stdout + message
    assert base64.b64encode(b"kaito:not-the-Password-42").decode() not in r.stderr + message
    # The challenge and one authenticated try; no retry of a 401.
    assert proxy.paths() == [f"/v2/{REPO}/manifests/0.2.0"] * 2
    assert not (tmp_path / "w" / ".kaito-weights.json").exists()


def test_a_missing_artifact_is_not_retried(registry: Registry, proxy_to: Any, tmp_path: Path) -> None:
    proxy = proxy_to(registry)
    image = f"{proxy.host}/{REPO}:9.9.9"
    term = tmp_path / "termination-log"
    r = weights("pull", "--image", image, "--dest", str(tmp_path / "w"), "--attempts", "5",
                env={"KAITO_TERMINATION_LOG": str(term)})  # fmt: skip
    assert r.returncode == 1
    message = term.read_text().strip()
    assert message == (
        f"weights artifact {image} not found in the registry (manifest unknown): "
        "publish it or set the Workspace's weights source"
    )
    assert f"error: {message}" in r.stderr
    assert proxy.paths() == [f"/v2/{REPO}/manifests/9.9.9"]


def test_an_adapter_image_is_not_a_weights_artifact(registry: Registry, proxy_to: Any, tmp_path: Path) -> None:
    from kaito_presets.runtime.oci import push_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    push_adapter(adapter, f"{registry.host}/adapters/a:1", model_name="phi-3-mini-4k-instruct")
    proxy = proxy_to(registry)
    image = f"{proxy.host}/adapters/a:1"
    term = tmp_path / "termination-log"
    r = weights("pull", "--image", image, "--dest", str(tmp_path / "w"), env={"KAITO_TERMINATION_LOG": str(term)})
    assert r.returncode == 1
    message = term.read_text()
    assert f"{image} is not a model weights artifact: artifactType (none)" in message
    assert f"expected {ARTIFACT_TYPE} or layers of application/vnd.cncf.model.*" in message
    assert "application/vnd.oci.image.layer.v1.tar+gzip" in message
    assert proxy.paths() == ["/v2/adapters/a/manifests/1"]  # no blob fetched, no retry


def test_transient_errors_are_retried(registry: Registry, published: str, proxy_to: Any, tmp_path: Path) -> None:
    proxy = proxy_to(registry, fail_first=2, fail_status=503)
    image = f"{proxy.host}/{REPO}:0.2.0"
    r = weights("pull", "--image", image, "--dest", str(tmp_path / "w"), "--attempts", "3", "--backoff", "0.01")
    assert r.returncode == 0, r.stderr
    assert "attempt 1/3 failed" in r.stderr and "attempt 2/3 failed" in r.stderr
    assert [s for _, _, s in proxy.requests][:2] == [503, 503]

    # Connection refused every time: three attempts, then one message naming the artifact.
    dead = f"127.0.0.1:{free_port()}/{REPO}:0.2.0"
    term = tmp_path / "termination-log"
    r = weights("pull", "--image", dead, "--dest", str(tmp_path / "w2"), "--attempts", "3", "--backoff", "0.01",
                env={"KAITO_TERMINATION_LOG": str(term)})  # fmt: skip
    assert r.returncode == 1
    assert dead in term.read_text() and "unreachable" in term.read_text() and "after 3 attempts" in term.read_text()
    assert r.stderr.count("failed (") == 2  # attempts 1 and 2 logged, the third is the error


def test_tar_layers_are_extracted_and_zstd_needs_its_package(
    registry: Registry, tiny_model: Path, tmp_path: Path
) -> None:
    weights_tar = tar_of({"model.safetensors": (tiny_model / "model.safetensors").read_bytes()})
    configs = {n: (tiny_model / n).read_bytes() for n in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    push_raw_manifest(
        registry.host,
        "tarred",
        "1",
        [
            ("application/vnd.cncf.model.weight.v1.tar", weights_tar, title("model.safetensors")),
            ("application/vnd.cncf.model.weight.config.v1.tar+gzip", tar_of(configs, gz=True), title("config")),
        ],
    )
    dest = tmp_path / "w"
    r = weights("pull", "--image", f"{registry.host}/tarred:1", "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert model_files(dest) == {"model.safetensors", *configs}
    assert load_and_generate(dest)

    push_raw_manifest(
        registry.host, "zstd", "1", [("application/vnd.cncf.model.weight.v1.tar+zstd", b"\x28\xb5\x2f\xfd", {})]
    )
    r = weights("pull", "--image", f"{registry.host}/zstd:1", "--dest", str(tmp_path / "z"))
    assert r.returncode == 1
    try:
        import zstandard  # noqa: F401
    except ImportError:
        assert "application/vnd.cncf.model.weight.v1.tar+zstd" in r.stderr and "zstandard" in r.stderr


@pytest.mark.parametrize(
    "bad", ["../escape.json", "/etc/passwd-copy", "sub/../../escape.json"], ids=["dotdot", "absolute", "nested"]
)
def test_unsafe_titles_are_refused(registry: Registry, bad: str, tmp_path: Path) -> None:
    push_raw_manifest(registry.host, "unsafe", "1", [(CONFIG_RAW, b"{}", title(bad))])
    dest = tmp_path / "a" / "w"
    r = weights("pull", "--image", f"{registry.host}/unsafe:1", "--dest", str(dest))
    assert r.returncode == 1
    assert "unsafe file path" in r.stderr and repr(bad) in r.stderr
    assert not (tmp_path / "a" / "escape.json").exists() and not (tmp_path / "escape.json").exists()
    assert not Path("/etc/passwd-copy").exists()


def test_unsafe_tar_entries_are_refused(registry: Registry, tmp_path: Path) -> None:
    layer = tar_of({"../../evil.json": b"{}"}, gz=True)
    push_raw_manifest(registry.host, "unsafetar", "1", [("application/vnd.cncf.model.weight.config.v1.tar+gzip",
                                                         layer, title("config"))])  # fmt: skip
    dest = tmp_path / "a" / "w"
    r = weights("pull", "--image", f"{registry.host}/unsafetar:1", "--dest", str(dest))
    assert r.returncode == 1 and "unsafe file path" in r.stderr
    assert not (tmp_path / "evil.json").exists()


def test_an_artifact_without_weights_is_not_loadable(registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    push_raw_manifest(registry.host, "noweights", "1", [(CONFIG_RAW, (tiny_model / "config.json").read_bytes(),
                                                         title("config.json"))])  # fmt: skip
    term = tmp_path / "termination-log"
    dest = tmp_path / "w"
    r = weights("pull", "--image", f"{registry.host}/noweights:1", "--dest", str(dest),
                env={"KAITO_TERMINATION_LOG": str(term)})  # fmt: skip
    assert r.returncode == 1
    assert f"{registry.host}/noweights:1" in term.read_text()
    assert "missing a weights file (*.safetensors or *.bin)" in term.read_text()
    assert not (dest / ".kaito-weights.json").exists()


def test_a_corrupt_blob_fails_the_digest_check(registry: Registry, tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "model"
    shutil.copytree(tiny_model, src)
    (src / "notes.txt").write_text(f"a blob no other test shares: {tmp_path}")  # blobs are shared registry-wide
    image = f"{registry.host}/corrupt:1"
    assert weights("push", "--src", str(src), "--image", image).returncode == 0
    manifest, _ = get_manifest(registry.host, "corrupt", "1")
    [layer] = [x for x in manifest["layers"] if x["annotations"]["org.opencontainers.image.title"] == "notes.txt"]
    hexd = layer["digest"].split(":", 1)[1]
    data = next((registry.root / "data").rglob(f"blobs/sha256/{hexd[:2]}/{hexd}/data"))
    data.write_bytes(b"x" * layer["size"])  # same size, other bytes
    r = weights("pull", "--image", image, "--dest", str(tmp_path / "w"), "--attempts", "2", "--backoff", "0.01")
    assert r.returncode == 1
    assert "digest mismatch" in r.stderr and layer["digest"] in r.stderr
    assert not (tmp_path / "w" / "notes.txt").exists() and not (tmp_path / "w" / ".kaito-weights.json").exists()


def test_registry_mirrors_apply_to_the_transport_only(registry: Registry, published: str, tmp_path: Path) -> None:
    image = f"registry.kaito.example/{REPO}:0.2.0"  # a name that does not resolve: only the mirror is reachable
    dest = tmp_path / "w"
    env = {"KAITO_REGISTRY_MIRRORS": json.dumps({"registry.kaito.example": registry.host})}
    r = weights("pull", "--image", image, "--dest", str(dest), "--attempts", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((dest / ".kaito-weights.json").read_text())["source"] == image
    assert (dest / "config.json").is_file()
