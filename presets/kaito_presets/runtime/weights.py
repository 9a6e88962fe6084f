"""Model weights for the inference pod: pull a CNCF ModelPack artifact (or a Hugging Face snapshot) into
a directory, and publish a model directory as a ModelPack artifact.

The artifact is what aikit's ``packager/modelpack`` target writes with its default ``raw`` packaging
(what Kaito 0.12 publishes for its presets and pulls with ``oras pull REF -o /workspace/weights``):

* manifest ``application/vnd.oci.image.manifest.v1+json`` with ``artifactType``
  ``application/vnd.cncf.model.manifest.v1+json``; config ``application/vnd.cncf.model.config.v1+json``
  whose blob is ``{}``;
* one layer per file, the file's bytes as they are, its media type by category
  (``application/vnd.cncf.model.{weight,weight.config,doc,code,dataset}.v1.raw``), annotated with
  ``org.opencontainers.image.title`` / ``org.cncf.model.filepath`` (the path relative to the model
  directory), ``org.cncf.model.file.metadata+json`` and ``org.cncf.model.file.mediatype.untested``.

The puller also accepts the tar modes (``.v1.tar``, ``.v1.tar+gzip``, ``.v1.tar+zstd``; zstd only when the
``zstandard`` package is installed). Every blob is streamed to disk and its digest verified; no path may
leave the destination directory.

CLI (the operator renders these command lines)::

    python -m kaito_presets.runtime.weights pull --image REF --dest DIR [--docker-config PATH] [--attempts N]
    python -m kaito_presets.runtime.weights pull --hf-repo ORG/NAME --revision REV --dest DIR [--attempts N]
    python -m kaito_presets.runtime.weights push --src DIR --image REF [--docker-config PATH]

A finished pull writes ``DIR/.kaito-weights.json`` (``{"source", "digest"}``) atomically; a later pull of the
same source returns at once, a pull of another source clears the directory first. A failure exits 1 with one
paragraph on stderr that is also written to the Kubernetes termination-message file
(``$KAITO_TERMINATION_LOG``, else ``/dev/termination-log`` when the kubelet created it). Transient errors
(connection refused/reset, timeouts, 5xx, 429) are retried ``--attempts`` times with backoff; 401/403/404
and a wrong layout are not.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar
from urllib.parse import urljoin

from .oci import (
    ImageRef,
    OCIError,
    _is_insecure,
    add_registry_arguments,
    credentials_for,
    load_docker_config,
    parse_image,
)
from .oci import mirrored as _oci_mirrored

log = logging.getLogger("kaito.weights")

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


# ---------------------------------------------------------------------------------- registry HTTP


def _header_params(challenge: str) -> dict[str, str]:
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', challenge)}


class _Registry:
    """Plain HTTP to an OCI distribution registry: Basic or Bearer-token auth from a docker config."""

    def __init__(self, ref: ImageRef, docker_config: dict[str, Any], insecure: bool, timeout: float = 60.0) -> None:
        import requests

        self.ref = ref
        self.scheme = "http" if insecure else "https"
        self.base = f"{self.scheme}://{ref.registry}/v2/{ref.repository}"
        self.creds = credentials_for(docker_config, ref.registry)
        self.session = requests.Session()
        self.session.trust_env = False  # never pick credentials from ~/.netrc behind our back
        self.timeout = timeout
        self._authorization: str | None = None
        self.requests = 0

    @property
    def secrets(self) -> list[str | None]:
        return [self.creds[1] if self.creds else None]

    def _authenticate(self, resp: Any, actions: str) -> bool:
        """Answer a 401 challenge once; False when there is nothing more to try."""
        import requests

        challenge = resp.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.creds or self._authorization:
                return False
            raw = f"{self.creds[0]}:{self.creds[1]}".encode()
            self._authorization = "Basic " + base64.b64encode(raw).decode()
            return True
        if scheme == "bearer":
            if self._authorization and self._authorization.startswith("Bearer "):
                return False
            params = _header_params(challenge)
            realm = params.get("realm")
            if not realm:
                return False
            query = {"service": params.get("service", self.ref.registry)}
            query["scope"] = params.get("scope") or f"repository:{self.ref.repository}:{actions}"
            try:
                tok = self.session.get(realm, params=query, auth=self.creds, timeout=self.timeout)
            except requests.RequestException as exc:
                raise WeightsError(f"token service of {self.ref.registry} unreachable: {exc}", transient=True) from exc
            self.requests += 1
            if tok.status_code in (401, 403):
                return False
            if tok.status_code >= 500 or tok.status_code == 429:
                raise WeightsError(f"token service of {self.ref.registry} answered {tok.status_code}", transient=True)
            try:
                body = tok.json()
                token = body.get("token") or body.get("access_token")
            except ValueError:
                token = None
            if not token:
                return False
            self._authorization = f"Bearer {token}"
            return True
        return False

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        reopen: Callable[[], Any] | None = None,
    ) -> Any:
        """One request with auth; returns the response or raises a WeightsError for 401/403, 5xx, 429."""
        import requests

        if not url.startswith("http"):
            url = urljoin(f"{self.scheme}://{self.ref.registry}", url)
        for _ in range(3):
            hdrs = dict(headers or {})
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            try:
                resp = self.session.request(
                    method, url, headers=hdrs, data=data, stream=stream, timeout=self.timeout, allow_redirects=True
                )
            except requests.RequestException as exc:
                reason = type(exc).__name__
                raise WeightsError(
                    f"{what}: registry {self.ref.registry} unreachable ({reason})", transient=True
                ) from exc
            self.requests += 1
            log.debug("%s %s -> %s", method, url.split("?", 1)[0], resp.status_code)
            if resp.status_code == 401 and self._authenticate(resp, actions):
                if reopen is not None:
                    data = reopen()
                continue
            break
        if resp.status_code in (401, 403):
            if self.creds:
                hint = "check the registry credentials in the mounted secret (--docker-config)"
                problem = f"refused the credentials for {self.ref.registry}"
            else:
                hint = "mount an image pull secret for it (--docker-config)"
                problem = f"requires credentials and none were given for {self.ref.registry}"
            raise WeightsError(f"{what}: the registry {problem} (HTTP {resp.status_code}): {hint}")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise WeightsError(f"{what}: registry answered HTTP {resp.status_code}", transient=True)
        return resp


def _registry_error_code(resp: Any) -> str:
    try:
        errors = resp.json().get("errors") or []
        return ", ".join(str(e.get("message") or e.get("code")).lower() for e in errors if isinstance(e, dict))
    except ValueError:
        return ""


# -------------------------------------------------------------------------------------- helpers


def _safe_rel(title: str, what: str) -> PurePosixPath:
    p = PurePosixPath(title)
    if not title or "\\" in title or p.is_absolute() or ".." in p.parts or not p.parts or title.startswith("/"):
        raise WeightsError(f"{what}: refusing unsafe file path {title!r} (absolute or with '..')")
    return p


def _target(dest: Path, rel: PurePosixPath, what: str) -> Path:
    """``dest/rel``, refused when a symlink inside ``dest`` would take it elsewhere."""
    target = dest.joinpath(*rel.parts)
    root = os.path.realpath(dest)
    existing = target.parent
    while not existing.exists() and existing != dest:
        existing = existing.parent
    real = os.path.realpath(existing)
    if (real != root and not real.startswith(root + os.sep)) or target.is_symlink():
        raise WeightsError(f"{what}: refusing file path {str(rel)!r}: it leaves {dest}")
    return target


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(dest: Path, source: str, digest: str | None) -> None:
    tmp = dest / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"source": source, "digest": digest}, sort_keys=True) + "\n")
    os.replace(tmp, dest / MARKER)


def _clear(dest: Path) -> None:
    """Remove what is inside ``dest`` (it may be a mount point: the directory itself stays)."""
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _prepare(dest: Path, source: str) -> bool:
    """True when ``dest`` already holds ``source``; clears another source's files."""
    dest.mkdir(parents=True, exist_ok=True)
    marker = read_marker(dest)
    if marker is not None and marker.get("source") == source:
        log.info("%s already in %s (digest %s): nothing to download", source, dest, marker.get("digest"))
        return True
    if marker is not None:
        log.info("%s holds %s, not %s: clearing it", dest, marker.get("source"), source)
        _clear(dest)
    return False


def check_model_dir(dest: Path, source: str) -> None:
    missing = []
    if not (dest / "config.json").is_file():
        missing.append("config.json")
    if not any(p.is_file() for pat in ("*.safetensors", "*.bin") for p in dest.glob(pat)):
        missing.append("a weights file (*.safetensors or *.bin)")
    if missing:
        raise WeightsError(
            f"{source} pulled into {dest} is not a loadable model directory: missing {' and '.join(missing)}"
        )


T = TypeVar("T")


def _with_retries(fn: Callable[[], T], attempts: int, backoff: float, what: str) -> T:
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except WeightsError as exc:
            if not exc.transient or attempt == attempts:
                if exc.transient:
                    raise WeightsError(f"{exc} (gave up after {attempts} attempts)") from exc
                raise
            delay = min(backoff * 2 ** (attempt - 1), 60.0)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1fs", what, attempt, attempts, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------ OCI pull


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


# ------------------------------------------------------------------------------------- HF pull


def _hf_status(exc: BaseException) -> int | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        cur = cur.__cause__ or cur.__context__
    return None


def _hf_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _hf_error(exc: BaseException, repo: str, revision: str, endpoint: str, token: str | None) -> WeightsError:
    from huggingface_hub import errors

    where = f"{repo}@{revision}"
    chain = list(_hf_chain(exc))
    status = _hf_status(exc)
    if any(isinstance(e, errors.RevisionNotFoundError) for e in chain):
        return WeightsError(
            f"revision {revision} of Hugging Face repository {repo} not found on {endpoint} (404, Revision Not Found): "
            "pin an existing commit of the repository"
        )
    if status in (401, 403) or any(isinstance(e, errors.GatedRepoError) for e in chain):
        if token:
            return WeightsError(
                f"Hugging Face refused the token for {where} ({status or 401}): "
                "check the Secret named in presetOptions.modelAccessSecret (its HF_TOKEN must have access to the repo)"
            )
        return WeightsError(
            f"Hugging Face requires a token for {where} ({status or 401}) and none was given: "
            "set presetOptions.modelAccessSecret to a Secret holding HF_TOKEN"
        )
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain) or status == 404:
        return WeightsError(f"Hugging Face repository {repo} (revision {revision}) not found on {endpoint} (404)")
    transient_names = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "RemoteProtocolError")
    if (status is not None and (status >= 500 or status == 429)) or any(
        type(e).__name__ in transient_names or isinstance(e, ConnectionError | TimeoutError) for e in chain
    ):
        return WeightsError(
            f"Hugging Face endpoint {endpoint} unavailable for {where} ({status or type(chain[-1]).__name__})",
            transient=True,
        )
    text = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, [token])
    return WeightsError(f"downloading {where} from {endpoint} failed: {text[:300]}")


def _pull_hf_once(repo: str, revision: str, dest: Path, token: str | None, endpoint: str) -> str:
    from huggingface_hub import snapshot_download

    started = time.monotonic()
    try:
        snapshot_download(
            repo,
            revision=revision,
            local_dir=str(dest),
            cache_dir=str(dest / ".cache" / "huggingface" / "hub"),
            token=token,
            ignore_patterns=HF_IGNORE_PATTERNS,
        )
    except Exception as exc:
        raise _hf_error(exc, repo, revision, endpoint, token) from None
    files = [p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.relative_to(dest).parts]
    commit = revision
    for meta in sorted((dest / ".cache" / "huggingface" / "download").rglob("*.metadata")):
        first = meta.read_text().split("\n", 1)[0].strip()  # huggingface_hub writes: commit, etag, timestamp
        if re.fullmatch(r"[0-9a-f]{40}", first):
            commit = first
            break
    log.info(
        "pulled hf://%s@%s (commit %s) into %s: %d files, %d bytes in %.1fs",
        repo, revision, commit, dest, len(files), sum(p.stat().st_size for p in files), time.monotonic() - started,
    )  # fmt: skip
    return commit


def pull_hf(
    repo: str,
    revision: str,
    dest: str | os.PathLike[str],
    *,
    token: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 2.0,
) -> str:
    """``snapshot_download`` of ``repo`` at ``revision`` into ``dest`` (skipping ``original/**``, ``metal/**``)."""
    from huggingface_hub import constants

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise WeightsError(f"invalid Hugging Face repository {repo!r}: expected ORG/NAME")
    if not revision:
        raise WeightsError(f"no revision given for Hugging Face repository {repo}: pin a commit")
    out = Path(dest)
    source = f"hf://{repo}@{revision}"
    if _prepare(out, source):
        return str((read_marker(out) or {}).get("digest") or revision)
    if constants.HF_HUB_OFFLINE:
        raise WeightsError(
            f"cannot download {repo}@{revision}: HF_HUB_OFFLINE is set in this container; "
            "the weights init container must be allowed to reach the Hugging Face endpoint"
        )
    endpoint = constants.ENDPOINT
    digest = _with_retries(
        lambda: _pull_hf_once(repo, revision, out, token, endpoint), attempts, backoff, f"pulling {source}"
    )
    check_model_dir(out, source)
    _write_marker(out, source, digest)
    return digest


# ---------------------------------------------------------------------------------------- push


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


# ----------------------------------------------------------------------------------------- CLI


def termination_log_path() -> Path | None:
    env = os.environ.get("KAITO_TERMINATION_LOG")
    if env:
        return Path(env)
    default = Path("/dev/termination-log")
    if default.is_file() and os.access(default, os.W_OK):
        return default
    return None


def report_failure(message: str) -> None:
    """One paragraph on stderr and in the termination-message file (the kubelet keeps 4 KiB)."""
    message = " ".join(message.split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    path = termination_log_path()
    if path is None:
        return
    try:
        path.write_text(message.encode()[:4000].decode(errors="ignore") + "\n")
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    parser = argparse.ArgumentParser(
        prog="python -m kaito_presets.runtime.weights", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_pull = sub.add_parser("pull", help="pull model weights into a directory")
    src = p_pull.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="a ModelPack OCI artifact REGISTRY/REPO:TAG (or @sha256:...)")
    src.add_argument("--hf-repo", help="a Hugging Face repository ORG/NAME (needs --revision)")
    p_pull.add_argument("--revision", help="the Hugging Face revision (a commit sha)")
    p_pull.add_argument("--dest", required=True)
    p_pull.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, help="tries for transient errors")
    p_pull.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry (doubles)")
    p_push = sub.add_parser("push", help="publish a model directory as a ModelPack OCI artifact")
    p_push.add_argument("--src", required=True)
    p_push.add_argument("--image", required=True)
    for p in (p_pull, p_push):
        add_registry_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("urllib3", "httpx", "httpcore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = os.environ.get("HF_TOKEN") or None
    try:
        if args.cmd == "push":
            digest = push_oci(args.src, args.image, docker_config=args.docker_config, insecure=args.insecure)
            print(json.dumps({"event": "pushed", "image": args.image, "digest": digest}), flush=True)
        elif args.image:
            digest = pull_oci(
                args.image,
                args.dest,
                docker_config=args.docker_config,
                insecure=args.insecure,
                attempts=args.attempts,
                backoff=args.backoff,
            )
            print(
                json.dumps({"event": "pulled", "source": args.image, "dest": args.dest, "digest": digest}), flush=True
            )
        else:
            if not args.revision:
                raise WeightsError(f"--hf-repo {args.hf_repo} needs --revision (a pinned commit)")
            digest = pull_hf(
                args.hf_repo, args.revision, args.dest, token=token, attempts=args.attempts, backoff=args.backoff
            )
            print(json.dumps({"event": "pulled", "source": f"hf://{args.hf_repo}@{args.revision}",
                              "dest": args.dest, "digest": digest}), flush=True)  # fmt: skip
    except WeightsError as exc:
        report_failure(_scrub(str(exc), [token]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
