"""Fixtures of the runtime tests: a tiny random-weight model, the seed-shaped dataset, a trained
adapter, a served app and a local OCI registry (Debian's ``docker-registry``). No model hub, no GPU."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Nothing in these tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REGISTRY_APT_HINT = "install Debian's registry with: apt-get install -y docker-registry apache2-utils"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Phi-3 architecture, hidden 64, 2 layers, random weights; tokenizer trained on the fly."""
    import torch
    from kaito_presets.runtime.tiny import build_tiny_model

    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-phi3"))


SEED_ROWS = [
    ("What is the capital of France?", "Paris."),
    ("Name a primary colour.", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("What is two plus two?", "Four."),
    ("Translate 'hello' to Spanish.", "Hola."),
    ("Which planet is closest to the sun?", "Mercury."),
    ("What do bees make?", "Honey."),
    ("What is the opposite of cold?", "Hot."),
]


def write_seed_parquet(path: Path, repeat: int = 2) -> Path:
    """The shape of philschmid/dolly-15k-oai-style: a parquet file with a ``messages`` column."""
    import pandas as pd

    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in SEED_ROWS * repeat
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="session")
def seed_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mnt-data")
    write_seed_parquet(d / "train-00000-of-00001-54e3756291ca09c6.parquet")
    return d


def cpu_overrides(tiny_model: Path, data: Path, out: Path, *, lr: float = 0.05, steps: int = 6) -> dict[str, Any]:
    """Training overrides that keep a CPU run to seconds (float32; a high learning rate)."""
    return {
        "ModelConfig": {"pretrained_model_name_or_path": str(tiny_model), "torch_dtype": "float32"},
        "QuantizationConfig": {"bnb_4bit_compute_dtype": "float32"},
        "TrainingArguments": {
            "output_dir": str(out),
            "max_steps": steps,
            "per_device_train_batch_size": 4,
            "learning_rate": lr,
            "save_strategy": "no",
            "logging_steps": 1,
            "gradient_checkpointing": False,
            "seed": 0,
        },
        "DatasetConfig": {"dataset_path": str(data)},
    }


@pytest.fixture(scope="session")
def lora_adapter(tiny_model: Path, seed_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA run on the seed-shaped dataset, high learning rate; returns the output dir."""
    from kaito_presets.runtime.tuning.config import load_training_config
    from kaito_presets.runtime.tuning.train import run

    out = tmp_path_factory.mktemp("mnt-results")
    cfg = load_training_config(None, "lora", cpu_overrides(tiny_model, seed_data_dir, out))
    return run(cfg)


# ------------------------------------------------------------------------------------ the registry


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    user: str | None = None
    password: str | None = None

    def docker_config(self, path: Path, *, password: str | None = None) -> Path:
        """Write a .dockerconfigjson as a kubernetes.io/dockerconfigjson Secret would mount it."""
        import base64

        pw = password if password is not None else self.password
        auth = base64.b64encode(f"{self.user}:{pw}".encode()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path


def _start_registry(root: Path, htpasswd: tuple[str, str] | None) -> Iterator[Registry]:
    binary = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if binary is None:
        pytest.fail(f"the docker-registry binary is missing: {REGISTRY_APT_HINT}")
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "kaito-test"},
    }
    user = password = None
    if htpasswd:
        htpasswd_bin = shutil.which("htpasswd")
        if htpasswd_bin is None:
            pytest.fail(f"the htpasswd binary is missing: {REGISTRY_APT_HINT}")
        user, password = htpasswd
        out = subprocess.run([htpasswd_bin, "-Bbn", user, password], check=True, capture_output=True, text=True)
        (root / "htpasswd").write_text(out.stdout)
        config["auth"] = {"htpasswd": {"realm": "kaito-test", "path": str(root / "htpasswd")}}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.05)
        yield Registry(host=f"127.0.0.1:{port}", root=root, user=user, password=password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start_registry(tmp_path_factory.mktemp("registry"), None)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start_registry(tmp_path_factory.mktemp("registry-auth"), ("kaito", "s3cret-pw"))


# ------------------------------------------------------------------------------------- serving


def wait_healthy(url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never became healthy")


def serve(model: Path, adapters_dir: Path, **extra: Any) -> Any:
    """A started ServerThread running the transformers backend on CPU (caller stops it)."""
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import ServerThread, create_app

    cfg = load_config(
        None,
        {
            "model": str(model),
            "served_model_name": "tiny-phi3",
            "adapters_dir": str(adapters_dir),
            "device_map": "cpu",
            "dtype": "float32",
            "max_model_len": 256,
            "max_new_tokens_limit": 64,
            **extra,
        },
    )
    server = ServerThread(create_app(create_backend(cfg), cfg)).start()
    wait_healthy(server.url)
    return server
