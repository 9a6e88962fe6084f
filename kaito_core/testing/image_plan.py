"""What kaito-core's images are and the tags they build to, computed from the tree without running a tool.

Each image is an :class:`ImageSpec` (its Containerfile, the rootfs it is FROM, the distributions whose
requirements and wheels go in); :func:`plan` computes its tags. :mod:`kaito_core.testing.images` runs the tools.

Tags are ``localhost/<name>:<version>-<hash12>`` (the hash covers the Containerfile, the requirements, the
sources of every distribution installed and the base tag) and ``localhost/<name>:<version>``. An image whose
hash tag is already in storage is not rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BASE",
    "CURL_BASE",
    "DEFAULT_IMAGES",
    "IMAGES",
    "ROOTFS",
    "ImageRef",
    "ImageSpec",
    "Rootfs",
    "deps_key",
    "normalised_image",
    "plan",
    "project_version",
    "requirements",
    "rootfs_tag",
    "source_hash",
]

# Bump when the way a rootfs or image is assembled changes in a way its inputs do not show.
RECIPE_VERSION = "1"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "deploy" / "images"
# Wheels are built from these; their own dependencies are never third-party requirements.
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", ".nox", "dist", "build"}


@dataclass(frozen=True)
class Rootfs:
    """A minimal Debian root filesystem built by mmdebstrap and imported as an image."""

    repository: str
    packages: tuple[str, ...]
    suite: str = SUITE


@dataclass(frozen=True)
class ImageSpec:
    """One image: its Containerfile, what it is FROM, and what goes into its context."""

    name: str  # the short name used on the command line
    repository: str
    containerfile: str  # under deploy/images
    rootfs: Rootfs | None = None
    external_base: str | None = None  # an image that must already be in local storage (vLLM)
    # (distribution folder relative to the repository root, extras) whose third-party requirements go in layer (a)
    requirements: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude_requirements: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()  # distribution folders built as wheels for layer (b)
    files: tuple[str, ...] = ()  # extra context files under deploy/images


BASE = Rootfs("kaito-base", ("python3", "python3-venv", "ca-certificates"))
CURL_BASE = Rootfs("kaito-curl-base", ("curl", "ca-certificates"))
ROOTFS = {r.repository: r for r in (BASE, CURL_BASE)}

IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        ImageSpec(
            "runtime",
            "kaito-runtime",
            "runtime.Containerfile",
            rootfs=BASE,
            requirements=(("presets", ("inference", "tuning")),),
            wheels=("presets",),
        ),
        ImageSpec(
            "controller",
            "kaito-core-controller",
            "controller.Containerfile",
            rootfs=BASE,
            requirements=(("presets", ()), (".", ()), ("provisioners/aks", ()), ("provisioners/karpenter", ())),
            wheels=("presets", ".", "provisioners/aks", "provisioners/karpenter"),
        ),
        ImageSpec("curl", "kaito-curl", "curl.Containerfile", rootfs=CURL_BASE, files=("curl-entrypoint.sh",)),
        ImageSpec(
            "runtime-vllm",
            "kaito-runtime-vllm",
            "runtime-vllm.Containerfile",
            external_base=os.environ.get("KAITO_VLLM_BASE", "docker.io/vllm/vllm-openai:latest"),
            requirements=(("presets", ("vllm",)),),
            exclude_requirements=("vllm",),  # the base image's, with the torch it was built against
            wheels=("presets",),
        ),
    )
}
DEFAULT_IMAGES = ("runtime", "controller", "curl", "runtime-vllm")


@dataclass
class ImageRef:
    """A built (or found, or skipped) image."""

    name: str
    tag: str  # localhost/<repository>:<version>-<hash12>
    version_tag: str  # localhost/<repository>:<version>
    digest_key: str  # the full content hash
    base: str | None = None
    deps_key: str | None = None
    archive: Path | None = None
    built: bool = False
    seconds: float = 0.0
    skipped: str | None = None
    pushed: list[str] = field(default_factory=list)


# --- inputs and hashes ------------------------------------------------------------------------------------------


def project_version(root: Path = ROOT) -> str:
    version: str = _pyproject(root / "pyproject.toml")["project"]["version"]
    return version


def _pyproject(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_names(root: Path) -> set[str]:
    names = {_requirement_name(str(_pyproject(root / "pyproject.toml")["project"]["name"]))}
    for spec in IMAGES.values():
        for folder in spec.wheels:
            names.add(_requirement_name(str(_pyproject(root / folder / "pyproject.toml")["project"]["name"])))
    return names


def requirements(spec: ImageSpec, root: Path = ROOT) -> list[str]:
    """The sorted, deduplicated third-party requirements of ``spec``'s layer (a)."""
    own = _project_names(root) | set(spec.exclude_requirements)
    found: set[str] = set()
    for folder, extras in spec.requirements:
        project = _pyproject(root / folder / "pyproject.toml")["project"]
        items: list[str] = list(project.get("dependencies", []))
        optional = project.get("optional-dependencies", {})
        for extra in extras:
            items += optional[extra]
        found.update(item.strip() for item in items if _requirement_name(item) not in own)
    return sorted(found, key=lambda item: (_requirement_name(item), item))


def _wheel_inputs(folder: Path) -> list[Path]:
    """The files a distribution's wheel is built from: pyproject, readme, its packages."""
    project = _pyproject(folder / "pyproject.toml")
    inputs = [folder / "pyproject.toml"]
    readme = project.get("project", {}).get("readme")
    if isinstance(readme, str):
        inputs.append(folder / readme)
    tool = project.get("tool", {})
    packages = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {}).get("packages")
    inputs += [folder / package for package in packages or [folder.name.replace("-", "_")]]
    return inputs


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                skipped = _SKIP_PARTS.intersection(relative) or any(part.endswith(".egg-info") for part in relative)
                if child.is_file() and not skipped and child.suffix not in (".pyc", ".pyo"):
                    yield child


def source_hash(folder: Path, root: Path = ROOT) -> str:
    """A hash of every file that goes into ``folder``'s wheel (paths and contents)."""
    digest = hashlib.sha256()
    for path in _files(_wheel_inputs(folder)):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def debian_mirror() -> str:
    """``$KAITO_DEBIAN_MIRROR``, else the first Debian URI apt on this host uses."""
    override = os.environ.get("KAITO_DEBIAN_MIRROR")
    if override:
        return override
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        with contextlib.suppress(OSError):
            for match in re.finditer(r"(https?://\S+/debian)/?(?:\s|$)", source.read_text()):
                return match.group(1)
    return DEFAULT_MIRROR


def rootfs_tag(rootfs: Rootfs) -> str:
    key = _hash(RECIPE_VERSION, rootfs.suite, debian_mirror(), *rootfs.packages)
    return f"localhost/{rootfs.repository}:{rootfs.suite}-{key[:12]}"


def deps_key(spec: ImageSpec, root: Path = ROOT) -> str:
    """The cache key of layer (a): the base and the dependency list."""
    return _hash(_base_of(spec), *requirements(spec, root))[:12]


def _base_of(spec: ImageSpec) -> str:
    if spec.rootfs is not None:
        return rootfs_tag(spec.rootfs)
    assert spec.external_base is not None
    return spec.external_base


def plan(spec: ImageSpec, root: Path = ROOT) -> ImageRef:
    """The tags ``spec`` builds to from this tree (no tool is run)."""
    version = project_version(root)
    base = _base_of(spec)
    parts: list[str | bytes] = [RECIPE_VERSION, version, base, (IMAGE_DIR / spec.containerfile).read_bytes()]
    parts += [(IMAGE_DIR / name).read_bytes() for name in spec.files]
    parts += requirements(spec, root)
    parts += [f"{folder}={source_hash(root / folder, root)}" for folder in spec.wheels]
    key = _hash(*parts)
    repository = f"localhost/{spec.repository}"
    return ImageRef(
        spec.name,
        tag=f"{repository}:{version}-{key[:12]}",
        version_tag=f"{repository}:{version}",
        digest_key=key,
        base=base,
        deps_key=deps_key(spec, root) if spec.requirements else None,
    )


def normalised_image(image: str | None) -> str:
    """podman lists docker.io images with their registry; accept a short name too."""
    image = image or ""
    first = image.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image if '/' in image else 'library/' + image}"
