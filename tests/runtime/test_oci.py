"""Adapters as OCI images: push to Debian's docker-registry on loopback (with and without htpasswd
auth), pull into an adapter directory, serve it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import Registry, serve

pytestmark = pytest.mark.runtime

MODEL = "phi-3-mini-128k-instruct"


def _manifest(reg: Registry, repo: str, tag: str, auth: tuple[str, str] | None = None) -> tuple[dict[str, Any], Any]:
    import requests

    url = f"http://{reg.host}/v2/{repo}/manifests/{tag}"
    r = requests.get(url, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, auth=auth, timeout=10)
    r.raise_for_status()
    return r.json(), r


def test_push_layout_and_pull_roundtrip(registry: Registry, lora_adapter: Path, tmp_path: Path) -> None:
    import requests
    from kaito_presets.runtime.oci import pull_adapter, push_adapter

    image = f"{registry.host}/adapters/seed-adapter:0.0.1"
    digest = push_adapter(lora_adapter, image, model_name=MODEL)
    assert digest.startswith("sha256:")

    manifest, resp = _manifest(registry, "adapters/seed-adapter", "0.0.1")
    assert resp.headers["Docker-Content-Digest"] == digest
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"]["sh.kaito.model.name"] == MODEL
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = requests.get(f"http://{registry.host}/v2/adapters/seed-adapter/blobs/{layer['digest']}", timeout=10).content
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"data/adapter_config.json", "data/adapter_model.safetensors"} <= names
    config = json.loads(
        requests.get(
            f"http://{registry.host}/v2/adapters/seed-adapter/blobs/{manifest['config']['digest']}", timeout=10
        ).content
    )
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]

    dest = tmp_path / "mnt-adapter" / "seed-adapter"
    pulled = pull_adapter(image, dest)
    assert pulled["annotations"]["sh.kaito.model.name"] == MODEL
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        assert (dest / f).read_bytes() == (lora_adapter / f).read_bytes()
    # The same bytes pushed twice give the same digest (a deterministic layer).
    assert push_adapter(lora_adapter, image, model_name=MODEL) == digest


def test_push_refuses_a_directory_without_an_adapter(registry: Registry, tmp_path: Path) -> None:
    from kaito_presets.runtime.oci import OCIError, push_adapter

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(OCIError, match=r"missing adapter_model\.safetensors"):
        push_adapter(tmp_path, f"{registry.host}/x/y:1", model_name=MODEL)


def test_pull_of_a_missing_image_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    from kaito_presets.runtime.oci import OCIError, pull_adapter

    with pytest.raises(OCIError, match="cannot read the manifest"):
        pull_adapter(f"{registry.host}/nothing/here:0.0.1", tmp_path / "a")


def test_htpasswd_registry_push_and_pull_with_the_mounted_secret(
    auth_registry: Registry, lora_adapter: Path, tmp_path: Path
) -> None:
    from kaito_presets.runtime.oci import OCIError, main, pull_adapter, push_adapter

    image = f"{auth_registry.host}/tuned/phi-3-adapter:0.0.1"
    with pytest.raises(OCIError, match="requires credentials"):
        push_adapter(lora_adapter, image, model_name=MODEL)
    wrong = auth_registry.docker_config(tmp_path / "wrong" / ".dockerconfigjson", password="nope")
    with pytest.raises(OCIError, match=r"401|credentials"):
        push_adapter(lora_adapter, image, model_name=MODEL, docker_config=wrong)

    # The push sidecar: waits for the completion marker, reads the secret mounted as a directory.
    secret_dir = tmp_path / "push-secret"
    auth_registry.docker_config(secret_dir / ".dockerconfigjson")
    assert (
        main(
            [
                "push",
                "--src",
                str(lora_adapter),
                "--image",
                image,
                "--model-name",
                MODEL,
                "--wait-for",
                str(lora_adapter / "fine_tuning_completed.txt"),
                "--docker-config",
                str(secret_dir),
            ]
        )
        == 0
    )
    manifest, _ = _manifest(
        auth_registry, "tuned/phi-3-adapter", "0.0.1", auth=(auth_registry.user or "", auth_registry.password or "")
    )
    assert manifest["annotations"]["sh.kaito.model.name"] == MODEL

    with pytest.raises(OCIError):
        pull_adapter(image, tmp_path / "anon")
    dest = tmp_path / "mnt-adapter" / "phi-3-adapter"
    assert main(["pull", "--image", image, "--dest", str(dest), "--docker-config", str(secret_dir)]) == 0
    assert (dest / "adapter_model.safetensors").read_bytes() == (
        lora_adapter / "adapter_model.safetensors"
    ).read_bytes()


def test_pulled_adapter_is_served(
    registry: Registry, tiny_model: Path, lora_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuning output -> registry -> /mnt/adapter/<name> -> inference server with strength from env."""
    import httpx
    import torch
    from kaito_presets.runtime.adapters import apply_adapters, discover_adapters
    from kaito_presets.runtime.oci import pull_adapter, push_adapter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    image = f"{registry.host}/adapters/served:0.0.1"
    push_adapter(lora_adapter, image, model_name=MODEL)
    adapters = tmp_path / "mnt-adapter"
    pull_adapter(image, adapters / "phi-3-adapter")
    monkeypatch.setenv("phi-3-adapter", "1.0")

    prompt = "What is the capital of France?"
    srv = serve(tiny_model, adapters)
    try:
        assert [a.name for a in srv.server.config.app.state.backend.adapters] == ["phi-3-adapter"]
        r = httpx.post(
            f"{srv.url}/v1/completions", json={"prompt": prompt, "max_tokens": 10, "temperature": 0}, timeout=60
        )
        assert r.status_code == 200, r.text
        served = r.json()["choices"][0]["text"]
    finally:
        srv.stop()

    # The same greedy completion computed directly with the adapter applied...
    tok = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    ids = tok(prompt, return_tensors="pt")

    def greedy(model: Any) -> str:
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        return str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, local_files_only=True).eval()
    tuned = apply_adapters(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, local_files_only=True).eval(),
        discover_adapters(adapters, env={}),
    )
    assert served == greedy(tuned)
    # ...and the adapter is really in play: its logits differ from the base model's.
    with torch.no_grad():
        assert (tuned(**ids).logits - base(**ids).logits).abs().max().item() > 0.05


def test_docker_config_parsing(tmp_path: Path) -> None:
    import base64

    from kaito_presets.runtime.oci import credentials_for, load_docker_config, parse_image

    auth = base64.b64encode(b"user:pa:ss").decode()
    f = tmp_path / ".dockerconfigjson"
    f.write_text(
        json.dumps(
            {"auths": {"https://myacr.azurecr.io": {"auth": auth}, "other.io": {"username": "u", "password": "p"}}}
        )
    )
    cfg = load_docker_config(tmp_path)
    assert credentials_for(cfg, "myacr.azurecr.io") == ("user", "pa:ss")
    assert credentials_for(cfg, "other.io") == ("u", "p")
    assert credentials_for(cfg, "third.io") is None
    ref = parse_image("myacr.azurecr.io/adapters/phi-3:0.0.1")
    assert (ref.registry, ref.repository, ref.tag) == ("myacr.azurecr.io", "adapters/phi-3", "0.0.1")
    ref = parse_image("127.0.0.1:5000/a/b@sha256:" + "0" * 64)
    assert ref.registry == "127.0.0.1:5000" and ref.digest and ref.reference.startswith("sha256:")
    assert parse_image("ubuntu").registry == "registry-1.docker.io"


def test_push_sidecar_stops_waiting_when_tuning_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kaito_presets.runtime.oci import main

    (tmp_path / "fine_tuning_failed.txt").write_text('{"error": "boom"}')
    rc = main(
        [
            "push",
            "--src",
            str(tmp_path),
            "--image",
            "127.0.0.1:1/x/y:1",
            "--model-name",
            MODEL,
            "--wait-for",
            str(tmp_path / "fine_tuning_completed.txt"),
            "--fail-marker",
            str(tmp_path / "fine_tuning_failed.txt"),
            "--poll",
            "0.01",
        ]
    )
    assert rc == 1
    assert "tuning job failed" in capsys.readouterr().err


def test_adapter_pull_and_push_go_through_the_operators_registry_mirrors(
    lora_adapter: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's placeholder registry resolves to the mirror, for the push sidecar and the adapter puller."""
    from kaito_presets.runtime.oci import pull_adapter, push_adapter

    monkeypatch.setenv("KAITO_REGISTRY_MIRRORS", json.dumps({"ACR_REPO_HERE.azurecr.io": registry.host}))
    push_adapter(lora_adapter, "ACR_REPO_HERE.azurecr.io/mirrored-adapter:0.0.1", model_name="tiny")
    pull_adapter("ACR_REPO_HERE.azurecr.io/mirrored-adapter:0.0.1", tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    # The map decides where the traffic goes: pointed at a closed loopback port, the same pull fails.
    monkeypatch.setenv("KAITO_REGISTRY_MIRRORS", json.dumps({"ACR_REPO_HERE.azurecr.io": "127.0.0.1:9"}))
    with pytest.raises(Exception, match=r"127\.0\.0\.1:9|refused|onnect"):
        pull_adapter("ACR_REPO_HERE.azurecr.io/mirrored-adapter:0.0.1", tmp_path / "b")


def test_a_wildcard_registry_mirror_takes_every_registry_not_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``"*"`` (what ``kaito up --real-nodes`` sets): no registry name reaches its real host."""
    from kaito_presets.runtime.oci import OCIError, resolve_image

    monkeypatch.setenv("KAITO_REGISTRY_MIRRORS", json.dumps({"*": "10.231.0.254:5000", "myacr.io": "other:1"}))
    # the seed's placeholder is no valid repository name; a mirror takes it folded to lower case
    ref = resolve_image("ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1")
    assert (ref.registry, ref.repository, ref.tag) == ("10.231.0.254:5000", "adapter_here", "0.0.1")
    assert resolve_image("myacr.io/a:1").registry == "other:1"
    monkeypatch.delenv("KAITO_REGISTRY_MIRRORS")
    with pytest.raises(OCIError, match="lower case"):  # without a mirror the name is refused as before
        resolve_image("ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1")


def test_a_wildcard_url_mirror_takes_every_host_not_listed() -> None:
    from kaito_presets.runtime.download import mirrored

    url = "https://huggingface.co/datasets/x/resolve/main/train.parquet?download=true"
    target, addrs = mirrored(url, {"*": "http://127.0.0.1:8080"})
    assert target == "http://127.0.0.1:8080/datasets/x/resolve/main/train.parquet?download=true"
    assert addrs == ["127.0.0.1"]


def test_a_missing_optional_push_secret_pushes_anonymously_and_a_refusal_names_the_secret(
    lora_adapter: Path, registry: Registry, auth_registry: Registry, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The tuning pusher's secret volume is optional (the seed's ACR_REGISTRY_SECRET_HERE exists nowhere)."""
    from kaito_presets.runtime.oci import main

    missing = str(tmp_path / "push-secret" / ".dockerconfigjson")
    base = ["push", "--src", str(lora_adapter), "--model-name", MODEL, "--docker-config", missing]
    assert main([*base, "--image", f"{registry.host}/anon/adapter:0.0.1", "--credentials-optional"]) == 0
    assert "pushing anonymously" in capsys.readouterr().err
    assert main([*base, "--image", f"{auth_registry.host}/anon/adapter:0.0.1", "--credentials-optional"]) == 1
    assert "create the image push secret" in capsys.readouterr().err
    # without the flag a missing secret stays an error, as before
    assert main([*base, "--image", f"{registry.host}/anon/adapter:0.0.2"]) == 1
    assert "not found" in capsys.readouterr().err
