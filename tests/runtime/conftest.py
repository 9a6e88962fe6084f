"""Fixtures of the runtime tests: a tiny random-weight model, the seed-shaped dataset, a trained
adapter, a served app and a local OCI registry (Debian's ``docker-registry``). No model hub, no GPU."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_support import Registry, start_registry

from kaito_core.testing import standins

# Nothing in these tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Phi-3 architecture, hidden 64, 2 layers, random weights; tokenizer trained on the fly."""
    import torch
    from kaito_presets.runtime.tiny import build_tiny_model

    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-phi3"))


# The seed dataset's shape (a parquet with a ``messages`` column), as local mode's stand-in serves it.
write_seed_parquet = standins.write_seed_parquet


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


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from start_registry(tmp_path_factory.mktemp("registry"), None)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from start_registry(tmp_path_factory.mktemp("registry-auth"), ("kaito", "s3cret-pw"))


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
    from kaito_presets.runtime.inference.server import create_app

    from kaito_core.testing.asgi import ServerThread

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
