"""Build kaito-core's container images from source, with no registry to pull a base from.

    python -m kaito_core.testing.images [--only runtime,controller,curl] [--push REGISTRY] [--print-tags]
    ensure_images(["runtime", "controller"])  # -> {"runtime": ImageRef(...), ...}

The chain, each step cached by a content hash:

* rootfs ``kaito-base`` (python3, python3-venv, ca-certificates) and ``kaito-curl-base`` (curl): an
  ``mmdebstrap --variant=minbase bookworm`` tarball, ``podman import``-ed as ``localhost/<name>:bookworm-<hash>``;
  the hash covers the package list, the mirror and :data:`RECIPE_VERSION`.
* ``kaito-runtime``, ``kaito-core-controller``, ``kaito-curl`` (and ``kaito-runtime-vllm`` when its vLLM base is
  in local storage): ``buildah build`` of deploy/images/<name>.Containerfile, FROM the rootfs. The third-party
  dependencies are one layer keyed by requirements.txt (installed by the host's uv from the host's wheel cache,
  bind-mounted, so a rebuild downloads nothing); the project's wheels are a thin layer on top.

Tags and their hashes: :mod:`kaito_core.testing.image_plan`. Each built image is also saved as an OCI archive under
``~/.cache/kaito-core/images/`` (to import into containerd on real nodes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from kaito_core.testing.build import _build_lock, cache_root
from kaito_core.testing.image_plan import (
    DEFAULT_IMAGES,
    IMAGE_DIR,
    IMAGES,
    ROOT,
    ROOTFS,
    ImageRef,
    ImageSpec,
    Rootfs,
    debian_mirror,
    normalised_image,
    plan,
    requirements,
    rootfs_tag,
)
from kaito_core.testing.podman import containers_env

__all__ = [
    "IMAGES",
    "ROOTFS",
    "ImageBuildError",
    "ImageRef",
    "ImageSpec",
    "Rootfs",
    "ToolMissingError",
    "ensure_images",
    "main",
    "plan",
]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TOOLS = {"podman": "podman", "buildah": "buildah", "mmdebstrap": "mmdebstrap", "runc": "runc"}

Progress = Callable[[str], None]


class ToolMissingError(RuntimeError):
    """A container tool is not installed; the message names the apt packages."""


class ImageBuildError(RuntimeError):
    """A build step failed; the message carries its output's tail."""


# --- tools ------------------------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[kaito-core images] {message}", file=sys.stderr, flush=True)


def check_tools(names: Sequence[str] = ("podman", "buildah", "mmdebstrap", "runc")) -> None:
    missing = [name for name in names if not (shutil.which(name) or Path(f"/usr/sbin/{name}").exists())]
    if missing:
        packages = " ".join(_TOOLS[name] for name in missing)
        raise ToolMissingError(f"missing {', '.join(missing)}: apt-get install {packages}")


def _run(argv: Sequence[str], progress: Progress, *, what: str, timeout: float = 3600) -> str:
    """Run a tool, streaming its output to a log; raise with the tail when it fails."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        done = subprocess.run(
            list(argv), stdout=log, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=containers_env()
        )
        log.seek(0)
        output = log.read()
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise ImageBuildError(f"{what} failed ({done.returncode}): {' '.join(argv)}\n{tail}")
    progress(f"{what}: {time.monotonic() - started:.1f}s")
    return output


def local_tags() -> dict[str, str]:
    """Every ``repository:tag`` in local storage and its image id, newest first (one podman call)."""
    out = subprocess.run(
        ["podman", "images", "--sort", "created", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
        capture_output=True,
        text=True,
        check=True,
        env=containers_env(),
    ).stdout
    pairs = (line.split() for line in out.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def prune_old_tags(ref: ImageRef, keep: int = 3, progress: Progress = _progress) -> list[str]:
    """Untag all but the ``keep`` newest ``<version>-<hash>`` tags of ``ref``'s repository.

    Only tags go: a layer still used by a kept image (the dependency layer, usually) stays.
    """
    repository, version = ref.version_tag.rsplit(":", 1)
    ours = [tag for tag in local_tags() if tag.startswith(f"{repository}:{version}-") and tag != ref.tag]
    stale = ours[max(keep - 1, 0) :]
    for tag in stale:
        # An image a container still uses is kept: a concurrent test may be running it.
        subprocess.run(["podman", "rmi", tag], capture_output=True, env=containers_env())
    if stale:
        progress(f"untagged {len(stale)} older {repository} images")
    return stale


def cache_dir() -> Path:
    """Where images are assembled and their archives kept (``$KAITO_IMAGE_CACHE`` overrides)."""
    override = os.environ.get("KAITO_IMAGE_CACHE")
    return Path(override) if override else cache_root() / "images"


def uv_cache_dir() -> Path:
    """The host's uv wheel cache, shared with the image builds (``$KAITO_UV_CACHE`` overrides)."""
    override = os.environ.get("KAITO_UV_CACHE") or os.environ.get("UV_CACHE_DIR")
    return Path(override) if override else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uv"


def _uv() -> str:
    for candidate in (Path(sys.executable).parent / "uv", ROOT / ".venv" / "bin" / "uv"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("uv")
    if found is None:
        raise ToolMissingError("uv not found: pip install uv (the images install their venvs with it)")
    return found


def _ca_bundle() -> Path:
    """The CA bundle the build uses to reach PyPI (the host's, so an egress proxy's CA is honoured)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    import certifi  # type: ignore[import-not-found,unused-ignore]

    return Path(certifi.where())


# --- builds -----------------------------------------------------------------------------------------------------


def build_rootfs(rootfs: Rootfs, tags: dict[str, str], progress: Progress) -> str:
    tag = rootfs_tag(rootfs)
    if tag in tags:
        return tag
    with tempfile.TemporaryDirectory(prefix="kaito-rootfs-", dir=cache_dir()) as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        mirror = debian_mirror()
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(rootfs.packages)}",
                "--aptopt=APT::Install-Recommends false",
                # Documentation and translations are dead weight in a container; keep the copyright files.
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                rootfs.suite,
                str(tarball),
                mirror,
                f"deb {mirror} {rootfs.suite}-updates main",
                f"deb {mirror}-security {rootfs.suite}-security main",
            ],
            progress,
            what=f"mmdebstrap {rootfs.repository}",
        )
        _run(
            ["podman", "import", "--change", f"ENV PATH={_PATH}", "--change", 'CMD ["/bin/sh"]', str(tarball), tag],
            progress,
            what=f"podman import {tag}",
        )
    tags[tag] = "imported"
    return tag


def build_wheels(folders: Sequence[str], out: Path, progress: Progress, root: Path = ROOT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        _run(
            [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(root / folder)],
            progress,
            what=f"wheel {folder}",
        )


def prepare_context(spec: ImageSpec, context: Path, progress: Progress, root: Path = ROOT) -> None:
    """Write ``spec``'s build context: requirements.txt, wheels/, uv, ca.crt and its extra files."""
    context.mkdir(parents=True, exist_ok=True)
    (context / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements(spec, root)))
    wheels = context / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    build_wheels(spec.wheels, wheels, progress, root)
    if not spec.wheels:  # COPY wheels/ needs the folder to exist
        (wheels / ".keep").write_text("")
    shutil.copy2(_uv(), context / "uv")
    shutil.copyfile(_ca_bundle(), context / "ca.crt")
    for name in spec.files:
        shutil.copy2(IMAGE_DIR / name, context / name)


def build_image(spec: ImageSpec, ref: ImageRef, progress: Progress, root: Path = ROOT) -> None:
    uv_cache = uv_cache_dir()
    uv_cache.mkdir(parents=True, exist_ok=True)
    base_arg = "VLLM_IMAGE" if spec.external_base else "BASE"
    with tempfile.TemporaryDirectory(prefix=f"kaito-{spec.name}-", dir=cache_dir()) as tmp:
        context = Path(tmp)
        prepare_context(spec, context, progress, root)
        _run(
            [
                "buildah",
                "build",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--layers",
                "--pull-never",
                "--file",
                str(IMAGE_DIR / spec.containerfile),
                "--build-arg",
                f"{base_arg}={ref.base}",
                # The host's wheel cache: layer (a) installs from it, so nothing is downloaded twice.
                "--volume",
                f"{uv_cache}:/var/cache/uv-host",
                "--build-arg",
                "UV_CACHE_DIR=/var/cache/uv-host",
                "--tag",
                ref.tag,
                "--tag",
                ref.version_tag,
                str(context),
            ],
            progress,
            what=f"buildah build {ref.tag}",
        )


def save_archive(ref: ImageRef, progress: Progress) -> Path:
    """``podman save`` the image as an OCI archive; older archives of the same image are removed."""
    folder = cache_dir()
    archive = folder / f"{ref.tag.split('/', 1)[1].replace(':', '_')}.oci.tar"
    if archive.exists():
        return archive
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run(
        ["podman", "save", "--format", "oci-archive", "--output", str(partial), ref.tag],
        progress,
        what=f"podman save {ref.tag}",
    )
    partial.replace(archive)
    prefix = archive.name.rsplit("-", 1)[0] + "-"
    for old in folder.glob(f"{prefix}*.oci.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    return archive


def push(ref: ImageRef, registry: str, progress: Progress) -> list[str]:
    registry = registry.rstrip("/")
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    loopback = host in ("localhost", "127.0.0.1", "::1", "[::1]")
    pushed = []
    for local in (ref.tag, ref.version_tag):
        remote = f"{registry}/{local.split('/', 1)[1]}"
        argv = ["podman", "push", *(["--tls-verify=false"] if loopback else []), local, f"docker://{remote}"]
        _run(argv, progress, what=f"push {remote}")
        pushed.append(remote)
    return pushed


def ensure_images(
    names: Iterable[str] = ("runtime", "controller", "curl"),
    *,
    push_to: str | None = None,
    archives: bool = True,
    progress: Progress = _progress,
    root: Path = ROOT,
) -> dict[str, ImageRef]:
    """Build (or find) the named images; an unchanged tree builds nothing."""
    names = list(names)
    unknown = [name for name in names if name not in IMAGES]
    if unknown:
        raise ValueError(f"unknown images {unknown}; known: {', '.join(IMAGES)}")
    check_tools(("podman", "buildah", "runc"))
    refs: dict[str, ImageRef] = {}
    folder = cache_dir()
    with _build_lock(folder):
        tags = local_tags()
        for name in names:
            spec = IMAGES[name]
            started = time.monotonic()
            ref = plan(spec, root)
            if spec.external_base and ref.base not in tags and normalised_image(ref.base) not in tags:
                ref.skipped = f"skipped: base image {ref.base} not available"
                progress(f"{name}: {ref.skipped}")
                refs[name] = ref
                continue
            if ref.tag not in tags:
                if spec.rootfs is not None:
                    check_tools(("mmdebstrap",))
                    build_rootfs(spec.rootfs, tags, progress)
                build_image(spec, ref, progress, root)
                tags[ref.tag] = tags[ref.version_tag] = "built"
                ref.built = True
                prune_old_tags(ref, progress=progress)
            elif tags.get(ref.version_tag) != tags[ref.tag]:
                # Another tree built since: <version> follows the newest build of this one.
                _run(["podman", "tag", ref.tag, ref.version_tag], progress, what=f"tag {ref.version_tag}")
            if archives:
                ref.archive = save_archive(ref, progress)
            if push_to:
                ref.pushed = push(ref, push_to, progress)
            ref.seconds = time.monotonic() - started
            refs[name] = ref
    return refs


# --- command line -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito_core.testing.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(IMAGES)} (default: all)")
    parser.add_argument("--push", metavar="REGISTRY", help="also push <REGISTRY>/<name>:<version>[-<hash>]")
    parser.add_argument("--print-tags", action="store_true", help="print the tags this tree builds to; build nothing")
    parser.add_argument("--no-archives", action="store_true", help="skip the OCI archives")
    parser.add_argument(
        "--context", metavar="DIR", type=Path, help="only write the build context(s) to DIR[/<name>] (for docker build)"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",")] if args.only else list(DEFAULT_IMAGES)
    try:
        if args.print_tags:
            for name in names:
                ref = plan(IMAGES[name])
                print(f"{name}\t{ref.tag}\t{ref.version_tag}\tbase={ref.base}")
            return 0
        if args.context:
            for name in names:
                target = args.context / name if len(names) > 1 else args.context
                prepare_context(IMAGES[name], target, _progress)
                print(f"{name}\t{target}\tbase={plan(IMAGES[name]).base}")
            return 0
        started = time.monotonic()
        refs = ensure_images(names, push_to=args.push, archives=not args.no_archives)
    except (ToolMissingError, ImageBuildError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for ref in refs.values():
        if ref.skipped:
            print(f"{ref.name}\t{ref.skipped}")
            continue
        state = "built" if ref.built else "cached"
        print(f"{ref.name}\t{ref.tag}\t{ref.version_tag}\t{state} in {ref.seconds:.1f}s\t{ref.archive or ''}")
        for remote in ref.pushed:
            print(f"{ref.name}\tpushed {remote}")
    print(f"total {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
