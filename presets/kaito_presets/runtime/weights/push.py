"""Publish a model folder as a ModelPack raw artifact (what Kaito publishes for its presets)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

from ..oci import (
    _is_insecure,
)
from .common import (
    _CATEGORY_ORDER,
    ANNOTATION_FILE_METADATA,
    ANNOTATION_FILEPATH,
    ANNOTATION_TITLE,
    ANNOTATION_UNTESTED,
    ARTIFACT_TYPE,
    EMPTY_CONFIG,
    MANIFEST_MEDIA_TYPE,
    MODEL_CONFIG_MEDIA_TYPE,
    WeightsError,
    classify,
    media_type,
)
from .oci_pull import _reference, mirrored
from .registry import _Registry, _registry_error_code
from .store import _sha256_file, check_model_dir

log = logging.getLogger("kaito.weights")


@dataclass(frozen=True)
class _File:
    rel: str
    path: Path
    size: int
    digest: str
    category: str


def _model_files(src: Path) -> list[_File]:
    files: list[_File] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue  # .kaito-weights.json, .cache/huggingface, .git...
        size = path.stat().st_size
        files.append(_File(rel.as_posix(), path, size, _sha256_file(path), classify(rel.as_posix(), size)))
    files.sort(key=lambda f: (_CATEGORY_ORDER[f.category], f.rel))
    return files


def build_manifest(files: Sequence[_File]) -> dict[str, Any]:
    """The ModelPack raw manifest for ``files`` (deterministic)."""
    layers = []
    for f in files:
        metadata = {
            "name": PurePosixPath(f.rel).name,
            "mode": 0o644,
            "uid": 0,
            "gid": 0,
            "size": f.size,
            "mtime": "1970-01-01T00:00:00Z",
            "typeflag": 0,
        }
        layers.append(
            {
                "mediaType": media_type(f.category),
                "digest": f.digest,
                "size": f.size,
                "annotations": {
                    ANNOTATION_TITLE: f.rel,
                    ANNOTATION_FILEPATH: f.rel,
                    ANNOTATION_FILE_METADATA: json.dumps(metadata, separators=(",", ":")),
                    ANNOTATION_UNTESTED: "true",
                },
            }
        )
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": MODEL_CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
            "size": len(EMPTY_CONFIG),
        },
        "layers": layers,
    }


def _upload_blob(reg: _Registry, digest: str, size: int, opener: Callable[[], Any], what: str) -> bool:
    """Upload one blob (monolithic POST + PUT); False when the registry already has it."""
    head = reg.request("HEAD", f"{reg.base}/blobs/{digest}", what=what, actions="pull,push")
    if head.status_code == 200:
        return False
    start = reg.request(
        "POST", f"{reg.base}/blobs/uploads/", what=what, actions="pull,push", headers={"Content-Length": "0"}
    )
    if start.status_code not in (201, 202) or not start.headers.get("Location"):
        raise WeightsError(f"{what}: starting a blob upload failed (HTTP {start.status_code})")
    location = urljoin(f"{reg.scheme}://{reg.ref.registry}", start.headers["Location"])
    url = location + ("&" if "?" in location else "?") + f"digest={digest}"
    body = opener()
    try:
        put = reg.request(
            "PUT",
            url,
            what=what,
            actions="pull,push",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=body,
            reopen=opener,
        )
    finally:
        if hasattr(body, "close"):
            body.close()
    if put.status_code not in (201, 204):
        raise WeightsError(
            f"{what}: uploading blob {digest} failed (HTTP {put.status_code} {_registry_error_code(put)})"
        )
    return True


def push_oci(
    src: str | os.PathLike[str],
    image: str,
    *,
    docker_config: str | os.PathLike[str] | None = None,
    insecure: bool | None = None,
) -> str:
    """Publish the model directory ``src`` as the ModelPack raw artifact ``image``; return the digest."""
    import io

    ref, creds = _reference(image, docker_config)
    src_dir = Path(src)
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir} is not a directory: nothing to publish as {ref}")
    check_model_dir(src_dir, str(src_dir))
    started = time.monotonic()
    files = _model_files(src_dir)
    target = mirrored(ref)
    reg = _Registry(target, creds, _is_insecure(target, insecure))
    what = f"publishing weights artifact {ref}"
    uploaded = 0
    for f in files:
        if _upload_blob(reg, f.digest, f.size, functools.partial(f.path.open, "rb"), what):
            uploaded += f.size
    config_digest = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()
    _upload_blob(reg, config_digest, len(EMPTY_CONFIG), lambda: io.BytesIO(EMPTY_CONFIG), what)
    manifest = build_manifest(files)
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    resp = reg.request(
        "PUT",
        f"{reg.base}/manifests/{ref.reference}",
        what=what,
        actions="pull,push",
        headers={"Content-Type": MANIFEST_MEDIA_TYPE},
        data=body,
    )
    if resp.status_code not in (200, 201):
        raise WeightsError(
            f"{what}: the registry refused the manifest (HTTP {resp.status_code} {_registry_error_code(resp)})"
        )
    digest: str = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    log.info(
        "pushed %s (%s): %d layers, %d bytes uploaded in %.1fs",
        ref, digest, len(files), uploaded, time.monotonic() - started,
    )  # fmt: skip
    return digest
