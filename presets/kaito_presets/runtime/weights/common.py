"""The ModelPack layout's names and rules (media types, categories), the error type, shared constants."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
MODEL_MEDIA_PREFIX = "application/vnd.cncf.model."
EMPTY_CONFIG = b"{}"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_UNTESTED = "org.cncf.model.file.mediatype.untested"

MARKER = ".kaito-weights.json"
#: JSON {registry host: host to use} rendered by the operator; applied to every reference (transport only:
#: the marker and the messages keep the reference as written).
DEFAULT_ATTEMPTS = 3
HF_IGNORE_PATTERNS = ["original/**", "metal/**"]
LARGE_FILE = 10 * 1024 * 1024
_CHUNK = 1 << 20

# Categories as aikit's modelpack.sh sorts files; the media type is MODEL_MEDIA_PREFIX + category + ".v1.raw".
WEIGHT, CONFIG, DOC, CODE, DATASET = "weight", "weight.config", "doc", "code", "dataset"
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".ckpt"}
_CODE_SUFFIXES = {".py", ".sh", ".ipynb", ".go", ".js", ".ts"}
_DATASET_SUFFIXES = {".csv", ".tsv", ".jsonl", ".parquet", ".arrow", ".h5", ".npz"}
_CONFIG_SUFFIXES = {".json", ".txt", ".model", ".jinja", ".yaml", ".yml", ".tiktoken", ".vocab", ".merges"}
_CATEGORY_ORDER = {WEIGHT: 0, CONFIG: 1, DOC: 2, CODE: 3, DATASET: 4}
_MEDIA_RE = re.compile(
    r"^application/vnd\.cncf\.model\.(weight|weight\.config|doc|code|dataset)\.v1\.(raw|tar|tar\+gzip|tar\+zstd)$"
)


class WeightsError(RuntimeError):
    """A pull or push that failed; ``transient`` ones are worth another attempt."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def media_type(category: str, mode: str = "raw") -> str:
    return f"{MODEL_MEDIA_PREFIX}{category}.v1.{mode}"


def classify(rel_path: str, size: int) -> str:
    """The ModelPack category of a file (aikit's rules: weights by suffix or size, then the others)."""
    name = PurePosixPath(rel_path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _WEIGHT_SUFFIXES:
        return WEIGHT
    if suffix in _DATASET_SUFFIXES:
        return DATASET
    if name.startswith(("readme", "license")) or suffix == ".md":
        return DOC
    if suffix in _CODE_SUFFIXES:
        return CODE
    if suffix in _CONFIG_SUFFIXES or name.startswith("tokenizer") or name in ("vocab", "merges"):
        return CONFIG
    return WEIGHT if size > LARGE_FILE else CONFIG


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text
