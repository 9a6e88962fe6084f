"""Pull a ModelPack artifact (raw or tar layers) into a folder, through the operator's registry mirrors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ..oci import (
    ImageRef,
    OCIError,
    _is_insecure,
    load_docker_config,
    parse_image,
)
from ..oci import mirrored as _oci_mirrored
from .common import (
    _CHUNK,
    _MEDIA_RE,
    ANNOTATION_FILEPATH,
    ANNOTATION_TITLE,
    ARTIFACT_TYPE,
    DEFAULT_ATTEMPTS,
    DOCKER_MANIFEST_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MODEL_CONFIG_MEDIA_TYPE,
    MODEL_MEDIA_PREFIX,
    WeightsError,
)
from .registry import _Registry, _registry_error_code
from .store import (
    _prepare,
    _safe_rel,
    _sha256_file,
    _target,
    _with_retries,
    _write_marker,
    check_model_dir,
    read_marker,
)

log = logging.getLogger("kaito.weights")


def _layer_kind(layer: dict[str, Any], ref: ImageRef) -> tuple[str, str]:
    mt = str(layer.get("mediaType", ""))
    m = _MEDIA_RE.match(mt)
    if not m:
        raise WeightsError(
            f"{ref} has a layer of media type {mt!r}, which this puller does not know: expected "
            f"{MODEL_MEDIA_PREFIX}<weight|weight.config|doc|code|dataset>.v1.<raw|tar|tar+gzip|tar+zstd>"
        )
    return m.group(1), m.group(2)


def _check_layout(manifest: dict[str, Any], content_type: str, ref: ImageRef) -> list[dict[str, Any]]:
    mt = manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
    layers = manifest.get("layers")
    artifact_type = manifest.get("artifactType")
    config_type = (manifest.get("config") or {}).get("mediaType")
    expected = f"expected {ARTIFACT_TYPE} or layers of {MODEL_MEDIA_PREFIX}*"
    if mt not in (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE) or not isinstance(layers, list):
        raise WeightsError(f"{ref} is not a model weights artifact: manifest media type {mt}, {expected}")
    modelish = bool(layers) and all(str(x.get("mediaType", "")).startswith(MODEL_MEDIA_PREFIX) for x in layers)
    if artifact_type != ARTIFACT_TYPE and config_type != MODEL_CONFIG_MEDIA_TYPE and not modelish:
        kinds = sorted({str(x.get("mediaType")) for x in layers})
        raise WeightsError(
            f"{ref} is not a model weights artifact: artifactType {artifact_type or '(none)'}, "
            f"config {config_type}, layers {', '.join(kinds) or '(none)'}; {expected}"
        )
    if not layers:
        raise WeightsError(f"{ref} is a model artifact without layers: expected one layer per model file")
    for layer in layers:
        _layer_kind(layer, ref)
    return layers


def _download_blob(reg: _Registry, layer: dict[str, Any], out: Path, what: str) -> int:
    digest = str(layer["digest"])
    resp = reg.request("GET", f"{reg.base}/blobs/{digest}", what=what, stream=True)
    if resp.status_code == 404:
        raise WeightsError(f"{what}: blob {digest} is missing from the registry (blob unknown)")
    if resp.status_code != 200:
        raise WeightsError(f"{what}: HTTP {resp.status_code} fetching blob {digest}")
    algo, _, expected = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        raise WeightsError(f"{what}: unsupported digest algorithm {algo!r}")
    import requests

    h = hashlib.new(algo)
    n = 0
    try:
        with out.open("wb") as fh:
            for chunk in resp.iter_content(chunk_size=_CHUNK):
                h.update(chunk)
                fh.write(chunk)
                n += len(chunk)
    except requests.RequestException as exc:  # a cut stream: worth another attempt
        raise WeightsError(f"{what}: download of {digest} interrupted ({type(exc).__name__})", transient=True) from exc
    except OSError as exc:
        raise WeightsError(f"{what}: writing blob {digest} to {out.parent} failed: {exc}") from exc
    if h.hexdigest() != expected:
        out.unlink(missing_ok=True)
        raise WeightsError(f"{what}: digest mismatch for blob {digest} ({n} bytes received)", transient=True)
    if "size" in layer and int(layer["size"]) != n:
        out.unlink(missing_ok=True)
        raise WeightsError(f"{what}: blob {digest} is {n} bytes, the manifest says {layer['size']}")
    return n


def _open_tar(blob: Path, mode: str, mt: str) -> tuple[tarfile.TarFile, IO[bytes] | None]:
    if mode == "tar":
        return tarfile.open(blob, mode="r:"), None
    if mode == "tar+gzip":
        return tarfile.open(blob, mode="r:gz"), None
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise WeightsError(
            f"layer media type {mt} needs the 'zstandard' Python package, which this runtime image lacks: "
            "republish the weights with raw or tar+gzip layers"
        ) from exc
    fh = blob.open("rb")
    reader = zstandard.ZstdDecompressor().stream_reader(fh)
    return tarfile.open(fileobj=reader, mode="r|"), fh


def _extract(blob: Path, mode: str, mt: str, dest: Path, what: str) -> list[str]:
    tar, fh = _open_tar(blob, mode, mt)
    written: list[str] = []
    try:
        with tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                if name in ("", ".") or member.isdir():
                    continue
                rel = _safe_rel(name, what)
                if not member.isfile():
                    raise WeightsError(f"{what}: refusing tar entry {member.name!r}: not a regular file or directory")
                target = _target(dest, rel, what)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                tmp = target.with_name(target.name + ".kaito-part")
                with src, tmp.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(tmp, target)
                written.append(str(rel))
    except tarfile.TarError as exc:
        raise WeightsError(f"{what}: layer is not a valid {mt} archive: {exc}") from exc
    finally:
        if fh is not None:
            fh.close()
    return written


def mirrored(ref: ImageRef) -> ImageRef:
    """``ref`` through the operator's registry mirrors (:func:`kaito_presets.runtime.oci.mirrored`)."""
    try:
        return _oci_mirrored(ref)
    except OCIError as exc:
        raise WeightsError(str(exc)) from exc


def _pull_oci_once(ref: ImageRef, dest: Path, docker_config: dict[str, Any], insecure: bool | None) -> str:
    started = time.monotonic()
    shown = ref
    ref = mirrored(ref)
    if ref != shown:
        log.info("%s: pulling through the mirror %s", shown, ref.registry)
    reg = _Registry(ref, docker_config, _is_insecure(ref, insecure))
    ref = shown  # messages name the reference as the Workspace wrote it
    what = f"pulling weights artifact {ref}"
    accept = ", ".join((MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE))
    resp = reg.request("GET", f"{reg.base}/manifests/{ref.reference}", what=what, headers={"Accept": accept})
    if resp.status_code == 404:
        reason = _registry_error_code(resp) or "manifest unknown"
        raise WeightsError(
            f"weights artifact {ref} not found in the registry ({reason}): "
            "publish it or set the Workspace's weights source"
        )
    if resp.status_code != 200:
        raise WeightsError(f"{what}: HTTP {resp.status_code} reading the manifest")
    body = resp.content
    digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    if ref.digest and digest != ref.digest:
        raise WeightsError(f"{what}: the registry served manifest {digest}, not the pinned {ref.digest}")
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise WeightsError(f"{ref} is not a model weights artifact: its manifest is not JSON") from exc
    if not isinstance(manifest, dict):
        raise WeightsError(f"{ref} is not a model weights artifact: its manifest is not a JSON object")
    layers = _check_layout(manifest, resp.headers.get("Content-Type", ""), ref)
    log.info(
        "%s: manifest %s, %d layers, %d bytes", ref, digest, len(layers), sum(int(x.get("size", 0)) for x in layers)
    )
    total = 0
    with tempfile.TemporaryDirectory(prefix=".kaito-weights-", dir=dest) as tmp:
        for i, layer in enumerate(layers):
            category, mode = _layer_kind(layer, ref)
            mt = str(layer["mediaType"])
            annotations = layer.get("annotations") or {}
            if mode == "raw":
                title = annotations.get(ANNOTATION_TITLE) or annotations.get(ANNOTATION_FILEPATH)
                if not title:
                    raise WeightsError(f"{what}: raw layer {layer.get('digest')} has no {ANNOTATION_TITLE} annotation")
                rel = _safe_rel(str(title), what)
                target = _target(dest, rel, what)
                same_size = target.is_file() and target.stat().st_size == int(layer.get("size", -1))
                if same_size and _sha256_file(target) == layer.get("digest"):  # a restart after a partial pull
                    log.info("%s: %s already present (%s)", ref, rel, layer["digest"])
                    continue
                blob = Path(tmp) / f"layer-{i}"
                total += _download_blob(reg, layer, blob, what)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(blob, target)
                log.info("%s: layer %d/%d %s (%s, %d bytes)", ref, i + 1, len(layers), rel, category, layer.get("size"))
            else:
                blob = Path(tmp) / f"layer-{i}"
                total += _download_blob(reg, layer, blob, what)
                files = _extract(blob, mode, mt, dest, what)
                blob.unlink()
                log.info("%s: layer %d/%d %s with %d files", ref, i + 1, len(layers), mt, len(files))
    log.info(
        "pulled %s into %s: %d layers, %d bytes in %.1fs (%d requests)",
        ref, dest, len(layers), total, time.monotonic() - started, reg.requests,
    )  # fmt: skip
    return digest


def _reference(image: str, docker_config: str | os.PathLike[str] | None) -> tuple[ImageRef, dict[str, Any]]:
    """The artifact reference and the registry login for it, or a :class:`WeightsError` naming the artifact."""
    try:
        return parse_image(image), load_docker_config(docker_config)
    except OCIError as exc:
        raise WeightsError(f"weights artifact {image}: {exc}") from exc


def pull_oci(
    image: str,
    dest: str | os.PathLike[str],
    *,
    docker_config: str | os.PathLike[str] | None = None,
    insecure: bool | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 2.0,
) -> str:
    """Pull the ModelPack artifact ``image`` into ``dest``; return its manifest digest."""
    ref, creds = _reference(image, docker_config)
    out = Path(dest)
    source = str(ref)
    if _prepare(out, source):
        return str((read_marker(out) or {}).get("digest"))
    digest = _with_retries(lambda: _pull_oci_once(ref, out, creds, insecure), attempts, backoff, f"pulling {ref}")
    check_model_dir(out, source)
    _write_marker(out, source, digest)
    return digest
