"""Adapters as OCI artifacts: push a tuning output to a registry, pull it back for inference.

The artifact is a plain one-layer OCI image, the same layout both ways:

* layer  ``application/vnd.oci.image.layer.v1.tar+gzip`` holding ``data/adapter_config.json`` and
  ``data/adapter_model.safetensors`` (plus any other adapter files, e.g. the tokenizer, when present);
* config ``application/vnd.oci.image.config.v1+json`` (a minimal image config whose ``rootfs.diff_ids``
  names the uncompressed layer, so a container runtime or an image volume accepts it as well);
* manifest annotation ``sh.kaito.model.name`` (the base model the adapter was tuned from).

Transport is oras-py; credentials come from a mounted ``.dockerconfigjson`` (the Workspace's
``imagePushSecret`` / ``imagePullSecrets``), plain HTTP only for registries named insecure.

CLI (the tuning job's push sidecar and the inference pod's adapter init container)::

    python -m kaito_presets.runtime.oci push --src /mnt/results --image REGISTRY/REPO:TAG \
        --model-name phi-3-mini-128k-instruct --wait-for /mnt/results/fine_tuning_completed.txt \
        --docker-config /mnt/push-secret/.dockerconfigjson
    python -m kaito_presets.runtime.oci pull --image REGISTRY/REPO:TAG --dest /mnt/adapter/NAME \
        --docker-config /mnt/pull-secret/.dockerconfigjson
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger("kaito.oci")

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
MODEL_NAME_ANNOTATION = "sh.kaito.model.name"
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Files of a peft output directory that travel with the adapter when present.
OPTIONAL_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "README.md",
)
DEFAULT_INSECURE = ("localhost", "127.0.0.1", "::1")


class OCIError(RuntimeError):
    """A push or pull that cannot succeed as asked (bad input, registry refusal, missing files)."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        sep = "@" if self.digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_image(image: str, *, lenient: bool = False) -> ImageRef:
    """Split ``registry/repo[:tag][@digest]``; a missing registry means Docker Hub.

    ``lenient`` lets an upper-case repository through, for :func:`resolve_image` to judge after mirroring."""
    if not image or any(c.isspace() for c in image):
        raise OCIError(f"invalid image reference {image!r}")
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "registry-1.docker.io", rest if "/" in rest else f"library/{rest}"
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if not tag and not digest:
        tag = "latest"
    if not path or (path != path.lower() and not lenient):
        raise OCIError(f"invalid repository in image reference {image!r} (must be lower case)")
    return ImageRef(registry=registry, repository=path, tag=tag, digest=digest)


# ----------------------------------------------------------------------------------- credentials


#: JSON {registry host: host to use instead}, set by the operator (``registry_mirrors``): every pull and
#: push of these tools goes to the mirror; messages keep the reference as the user wrote it.
REGISTRY_MIRRORS_ENV = "KAITO_REGISTRY_MIRRORS"
#: Comma-separated registry hosts spoken to over plain HTTP (besides loopback), set by the operator.
INSECURE_REGISTRIES_ENV = "KAITO_INSECURE_REGISTRIES"


def mirrored(ref: ImageRef) -> ImageRef:
    """``ref`` with its registry replaced as ``$KAITO_REGISTRY_MIRRORS`` says (unchanged when not listed)."""
    raw = os.environ.get(REGISTRY_MIRRORS_ENV, "").strip()
    if not raw:
        return ref
    try:
        mirrors = json.loads(raw)
    except ValueError as exc:
        raise OCIError(f"{REGISTRY_MIRRORS_ENV} is not a JSON object of registry hosts: {exc}") from exc
    if not isinstance(mirrors, dict):
        raise OCIError(f"{REGISTRY_MIRRORS_ENV} is not a JSON object of registry hosts")
    host = mirrors.get(ref.registry) or mirrors.get("*")  # "*": every registry not listed
    if not host:
        return ref
    # A mirror takes the name folded to lower case: the seeds' placeholders (ADAPTER_HERE) are not valid
    # repository names, and a stand-in registry (kaito up --real-nodes) must take them unchanged.
    return ImageRef(registry=str(host).split("://", 1)[-1].rstrip("/"), repository=ref.repository.lower(),
                    tag=ref.tag, digest=ref.digest)


def resolve_image(image: str) -> ImageRef:
    """Where the pull and push tools go for ``image``: parsed, then through the registry mirrors."""
    ref = mirrored(parse_image(image, lenient=True))
    if ref.repository != ref.repository.lower():
        raise OCIError(f"invalid repository in image reference {image!r} (must be lower case)")
    return ref


def load_docker_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read a ``.dockerconfigjson`` (or a ``config.json``); a missing path gives no credentials."""
    if not path:
        return {}
    p = Path(path)
    if p.is_dir():
        for name in (".dockerconfigjson", "config.json", ".dockercfg"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise OCIError(f"registry credentials file {p} not found (is the image push/pull secret mounted?)")
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise OCIError(f"registry credentials file {p} is not valid JSON: {exc}") from exc
    if "auths" not in data and all(isinstance(v, dict) for v in data.values()):
        data = {"auths": data}  # the legacy .dockercfg shape
    return data


def credentials_for(config: dict[str, Any], registry: str) -> tuple[str, str] | None:
    """(username, password) for ``registry`` from a docker config's ``auths``, or None."""
    auths: dict[str, Any] = config.get("auths", {}) or {}
    candidates = {registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"}
    if registry in ("registry-1.docker.io", "docker.io"):
        candidates |= {"https://index.docker.io/v1/", "index.docker.io", "docker.io"}
    for key, entry in auths.items():
        host = key.split("://", 1)[-1].rstrip("/")
        host = host.split("/", 1)[0]
        if key not in candidates and host != registry:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            raw = base64.b64decode(entry["auth"]).decode()
            user, _, pw = raw.partition(":")
            return user, pw
    return None


# ---------------------------------------------------------------------------------- the artifact


def _tar_gz_adapter(src: Path, out: Path) -> tuple[str, str, int]:
    """Write the layer; return (compressed digest, uncompressed diff id, size). Deterministic bytes."""
    missing = [f for f in REQUIRED_FILES if not (src / f).is_file()]
    if missing:
        raise OCIError(f"{src} is not an adapter directory: missing {', '.join(missing)}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dir_info = tarfile.TarInfo("data")
        dir_info.type, dir_info.mode, dir_info.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(dir_info)
        for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
            f = src / name
            if not f.is_file():
                continue
            info = tarfile.TarInfo(f"data/{name}")
            info.size, info.mode, info.mtime = f.stat().st_size, 0o644, 0
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    raw_bytes = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw_bytes).hexdigest()
    gz = gzip.compress(raw_bytes, mtime=0)
    out.write_bytes(gz)
    return "sha256:" + hashlib.sha256(gz).hexdigest(), diff_id, len(gz)


def _registry(ref: ImageRef, docker_config: dict[str, Any], insecure: bool):  # type: ignore[no-untyped-def]
    import oras.provider
    import requests

    scheme = "http" if insecure else "https"
    try:
        ping = requests.get(f"{scheme}://{ref.registry}/v2/", timeout=30)
    except requests.RequestException as exc:
        raise OCIError(f"registry {ref.registry} unreachable over {scheme}: {exc}") from exc
    challenge = ping.headers.get("Www-Authenticate", "")
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    reg = oras.provider.Registry(hostname=ref.registry, insecure=insecure, auth_backend=backend)
    creds = credentials_for(docker_config, ref.registry)
    if creds:
        reg.auth.set_basic_auth(*creds)
    elif ping.status_code == 401 and backend == "basic":
        raise OCIError(f"registry {ref.registry} requires credentials and none were found for it")
    # Never read ~/.docker/config.json behind our back: credentials come only from the mounted secret.
    reg.auth._auth_config = {"auths": {}}
    return reg


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an oras call; its exceptions become an OCIError that says what failed."""
    try:
        return fn(*args, **kwargs)
    except OCIError:
        raise
    except Exception as exc:
        text = str(exc)
        hint = " (check the registry secret's credentials)" if "UNAUTHORIZED" in text or "401" in text else ""
        raise OCIError(f"{what} failed: {text[:300]}{hint}") from exc


def _check(resp: Any, what: str) -> None:
    if resp.status_code not in (200, 201, 202):
        hint = " (check the push secret's credentials)" if resp.status_code in (401, 403) else ""
        raise OCIError(f"{what} failed: HTTP {resp.status_code} {resp.text[:300]}{hint}")


def _is_insecure(ref: ImageRef, insecure: bool | None) -> bool:
    if insecure is not None:
        return insecure
    host = ref.registry.rsplit(":", 1)[0] if not ref.registry.startswith("[") else ref.registry
    env = {h.strip() for h in os.environ.get(INSECURE_REGISTRIES_ENV, "").split(",") if h.strip()}
    return host in DEFAULT_INSECURE or ref.registry in env or host in env


def push_adapter(
    src: str | os.PathLike[str],
    image: str,
    *,
    model_name: str,
    docker_config: str | os.PathLike[str] | None = None,
    insecure: bool | None = None,
) -> str:
    """Push the adapter in ``src`` as ``image``; return the manifest digest."""
    import oras.oci

    ref = resolve_image(image)
    src_dir = Path(src)
    creds = load_docker_config(docker_config)
    reg = _registry(ref, creds, _is_insecure(ref, insecure))
    container = reg.get_container(f"{ref.registry}/{ref.repository}:{ref.reference}")
    with tempfile.TemporaryDirectory(prefix="kaito-oci-") as tmp:
        layer_path = Path(tmp) / "layer.tar.gz"
        digest, diff_id, size = _tar_gz_adapter(src_dir, layer_path)
        layer = {"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size}
        config_blob = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {MODEL_NAME_ANNOTATION: model_name}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(config_blob)
        config = {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(config_blob).hexdigest(),
            "size": len(config_blob),
        }
        _check(
            _call("uploading the adapter layer", reg.upload_blob, str(layer_path), container, layer),
            "uploading the adapter layer",
        )
        _check(
            _call("uploading the image config", reg.upload_blob, str(config_path), container, config),
            "uploading the image config",
        )
        manifest = oras.oci.NewManifest()
        manifest["mediaType"] = MANIFEST_MEDIA_TYPE
        manifest["config"] = config
        manifest["layers"] = [layer]
        manifest["annotations"] = {MODEL_NAME_ANNOTATION: model_name}
        manifest.pop("artifactType", None)
        resp = _call(f"pushing the manifest of {ref}", reg.upload_manifest, manifest, container)
        _check(resp, f"pushing the manifest of {ref}")
    body = json.dumps(manifest).encode()
    manifest_digest: str = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    log.info("pushed %s (%s)", ref, manifest_digest)
    return manifest_digest


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> list[str]:
    written: list[str] = []
    for member in tar.getmembers():
        p = PurePosixPath(member.name)
        if p.is_absolute() or ".." in p.parts:
            raise OCIError(f"refusing layer entry with unsafe path {member.name!r}")
        parts = p.parts[1:] if p.parts and p.parts[0] == "data" else p.parts
        if not parts or member.isdir():
            continue
        if not member.isfile():
            raise OCIError(f"refusing layer entry {member.name!r}: not a regular file")
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = tar.extractfile(member)
        assert fh is not None
        with fh, target.open("wb") as out:
            shutil.copyfileobj(fh, out)
        written.append("/".join(parts))
    return written


def pull_adapter(
    image: str,
    dest: str | os.PathLike[str],
    *,
    docker_config: str | os.PathLike[str] | None = None,
    insecure: bool | None = None,
) -> dict[str, Any]:
    """Pull ``image`` and unpack its ``data/`` into ``dest``; return the manifest."""
    ref = resolve_image(image)
    creds = load_docker_config(docker_config)
    reg = _registry(ref, creds, _is_insecure(ref, insecure))
    container = reg.get_container(f"{ref.registry}/{ref.repository}:{ref.reference}")
    try:
        manifest: dict[str, Any] = reg.get_manifest(container, allowed_media_type=[MANIFEST_MEDIA_TYPE])
    except Exception as exc:
        raise OCIError(f"cannot read the manifest of {ref}: {exc}") from exc
    layers = [x for x in manifest.get("layers", []) if x.get("mediaType") == LAYER_MEDIA_TYPE]
    if not layers:
        raise OCIError(f"{ref} has no {LAYER_MEDIA_TYPE} layer: not a kaito adapter image")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kaito-oci-") as tmp:
        for i, layer in enumerate(layers):
            blob = Path(tmp) / f"layer{i}.tar.gz"
            resp = _call(f"downloading layer {layer['digest']}", reg.get_blob, container, layer["digest"], stream=True)
            _check(resp, f"downloading layer {layer['digest']}")
            h = hashlib.sha256()
            with blob.open("wb") as fh:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    h.update(chunk)
                    fh.write(chunk)
            if "sha256:" + h.hexdigest() != layer["digest"]:
                raise OCIError(f"layer {layer['digest']} of {ref}: digest mismatch")
            with tarfile.open(blob, mode="r:gz") as tar:
                _safe_extract(tar, out)
    missing = [f for f in REQUIRED_FILES if not (out / f).is_file()]
    if missing:
        raise OCIError(f"{ref} did not contain data/{', data/'.join(missing)}")
    log.info("pulled %s into %s", ref, out)
    return manifest


def _wait_for(path: Path, timeout: float, poll: float = 5.0, fail_marker: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if fail_marker is not None and fail_marker.exists():
            raise OCIError(f"not pushing: the tuning job failed ({fail_marker}: {fail_marker.read_text()[:300]})")
        if time.monotonic() > deadline:
            raise OCIError(f"gave up after {timeout:.0f}s waiting for {path}")
        time.sleep(poll)


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """The registry options every pull and push command of the runtimes takes."""
    parser.add_argument("--docker-config", help="path to a mounted .dockerconfigjson (file or directory)")
    parser.add_argument("--insecure", action="store_true", default=None, help="plain HTTP to the registry")


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    parser = argparse.ArgumentParser(prog="python -m kaito_presets.runtime.oci", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_push = sub.add_parser("push", help="push an adapter directory as an OCI image")
    p_push.add_argument("--credentials-optional", action="store_true",
                        help="push anonymously (saying so) when --docker-config does not exist: an optional "
                             "secret that is missing")
    p_push.add_argument("--src", default="/mnt/results")
    p_push.add_argument("--image", required=True)
    p_push.add_argument("--model-name", required=True, help="base model (annotation sh.kaito.model.name)")
    p_push.add_argument("--wait-for", type=Path, help="wait until this file exists (the completion marker)")
    p_push.add_argument("--wait-timeout", type=float, default=7 * 24 * 3600)
    p_push.add_argument("--fail-marker", type=Path, help="stop waiting (exit 1) when this file appears")
    p_push.add_argument("--poll", type=float, default=5.0, help="seconds between checks of the markers")
    p_pull = sub.add_parser("pull", help="pull an adapter image into a directory")
    p_pull.add_argument("--image", required=True)
    p_pull.add_argument("--dest", required=True)
    for p in (p_push, p_pull):
        add_registry_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.cmd == "push":
            if args.wait_for:
                _wait_for(args.wait_for, args.wait_timeout, args.poll, args.fail_marker)
            docker_config = args.docker_config
            if docker_config and args.credentials_optional and not Path(docker_config).exists():
                print(json.dumps({"event": "warning", "message": f"no registry credentials at {docker_config} "
                                  "(the image push secret does not exist): pushing anonymously"}),
                      file=sys.stderr, flush=True)
                docker_config = None
            try:
                digest = push_adapter(args.src, args.image, model_name=args.model_name, docker_config=docker_config,
                                      insecure=args.insecure)
            except OCIError as exc:
                if docker_config is None and args.docker_config:
                    raise OCIError(f"{exc} (pushed anonymously: create the image push secret with "
                                   "credentials for this registry)") from exc
                raise
            print(json.dumps({"event": "pushed", "image": args.image, "digest": digest}), flush=True)
        else:
            pull_adapter(args.image, args.dest, docker_config=args.docker_config, insecure=args.insecure)
            print(json.dumps({"event": "pulled", "image": args.image, "dest": args.dest}), flush=True)
    except OCIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
