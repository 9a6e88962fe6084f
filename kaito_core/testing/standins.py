"""Local stand-ins for what a cloud cluster fetches from the internet: weights, adapters, datasets.

``kaito up --real-nodes`` serves every Workspace from this machine alone. The
presets' weights artifacts are tiny random-weight models of the same
architecture, published under each preset's artifact name in the local
registry; an adapter a Workspace names is a tiny random LoRA adapter published
under that name; a tuning dataset URL is answered by a small parquet in the
seed's ``messages`` format. The operator's mirrors (``registry_mirrors`` and
``url_mirrors`` set to ``"*"``) send every pull, push and download there, so the
seed examples apply unchanged and nothing tries a real host.

The answers are noise (:data:`STANDIN_NOTICE`); the flow (pull, load, serve,
train, push, pull the adapter) is the real one.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "STANDIN_NOTICE",
    "DatasetMirror",
    "SeedNeeds",
    "publish_adapter",
    "publish_weights",
    "seed_needs",
    "write_seed_parquet",
]

STANDIN_NOTICE = "answers are noise: local stand-in weights (tiny random models of each preset's architecture)"

#: Question/answer pairs of the stand-in dataset (the seed's dolly-15k-oai-style has the same shape).
_SEED_ROWS = [
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
    """A parquet file with a ``messages`` column (system, user, assistant), as philschmid/dolly-15k-oai-style."""
    import pandas as pd  # type: ignore[import-untyped]

    rows = [{"messages": [{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in _SEED_ROWS * repeat]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@dataclass
class SeedNeeds:
    """What applied manifests will fetch: presets (weights), adapter images (preset they adapt)."""

    presets: set[str] = field(default_factory=set)
    adapters: dict[str, str] = field(default_factory=dict)


def _documents(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with contextlib.suppress(OSError, yaml.YAMLError):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Workspace":
                    yield doc


def seed_needs(paths: Iterable[Path], default_presets: Iterable[str] = ()) -> SeedNeeds:
    """Read Workspace manifests for the presets and adapter images they name (unreadable files are skipped:
    ``kubectl apply`` reports them)."""
    needs = SeedNeeds(presets=set(default_presets))
    for doc in _documents(paths):
        for section in ("inference", "tuning"):
            preset = ((doc.get(section) or {}).get("preset") or {}).get("name")
            if isinstance(preset, str):
                needs.presets.add(preset)
        inference = doc.get("inference") or {}
        preset = (inference.get("preset") or {}).get("name")
        for adapter in inference.get("adapters") or []:
            image = ((adapter or {}).get("source") or {}).get("image")
            if isinstance(image, str) and isinstance(preset, str):
                needs.adapters[image] = preset
    return needs


def publish_weights(registry_host: str, presets: Iterable[str], workdir: Path,
                    repository: str = "kaito") -> dict[str, str]:
    """Publish a tiny model of each preset's architecture as ``<registry>/<repository>/kaito-<preset>:<tag>``
    (the name and tag the operator's weights source uses); returns preset -> reference. Presets whose
    weights come from Hugging Face, or unknown names, are left out (their Workspaces say why)."""
    from kaito_presets import WEIGHTS_SOURCE_HUGGINGFACE, UnknownPresetError, default_catalog
    from kaito_presets.runtime.weights import push_oci

    catalog = default_catalog()
    published: dict[str, str] = {}
    for name in sorted(presets):
        try:
            preset = catalog.model(name)
        except UnknownPresetError:
            continue
        if preset.weights.source == WEIGHTS_SOURCE_HUGGINGFACE:
            continue
        ref = f"{registry_host}/{repository}/kaito-{name}:{preset.weights.tag}"
        push_oci(tiny_model_for(name, workdir), ref, insecure=True)  # one model per architecture
        published[name] = ref
    return published


def tiny_model_for(preset_name: str, workdir: Path) -> Path:
    """The tiny model of a preset's architecture, built once per architecture under ``workdir``."""
    from kaito_presets import default_catalog
    from kaito_presets.runtime.tiny import build_tiny_model

    architecture = default_catalog().model(preset_name).architecture
    folder = workdir / f"tiny-{architecture}"
    if not (folder / "config.json").exists():
        build_tiny_model(folder, architecture=architecture)
    return folder


def publish_adapter(registry_host: str, image: str, preset_name: str, workdir: Path) -> str:
    """Publish a tiny random LoRA adapter (for ``preset_name``'s stand-in model) where ``image`` resolves
    through a ``"*"`` registry mirror to ``registry_host``; returns the reference pushed to."""
    from kaito_presets.runtime.oci import parse_image, push_adapter
    from kaito_presets.runtime.tiny import build_tiny_adapter

    ref = parse_image(image, lenient=True)
    target = f"{registry_host}/{ref.repository.lower()}:{ref.tag or 'latest'}"
    folder = workdir / f"adapter-{ref.repository.lower().replace('/', '_')}"
    if not (folder / "adapter_config.json").exists():
        build_tiny_adapter(tiny_model_for(preset_name, workdir), folder)
    push_adapter(folder, target, model_name=preset_name, insecure=True)
    return target


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class DatasetMirror:
    """An HTTP server on ``127.0.0.1`` answering every GET with the stand-in parquet (any path, any query):
    the ``url_mirrors`` target of local mode."""

    def __init__(self, workdir: Path):
        parquet = write_seed_parquet(workdir / "seed.parquet")
        handler = type("SeedHandler", (_Handler,), {"payload": parquet.read_bytes()})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kaito-dataset-mirror", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
