"""Build the control-plane binaries from source through the Go module proxy.

``go install k8s.io/kubernetes/cmd/kube-apiserver@vX`` is refused because the
kubernetes module replaces its ``k8s.io/<staging>`` modules with local folders.
We therefore build from a tiny wrapper module that requires ``k8s.io/kubernetes``
and replaces every staging module (the list is read from the published
``go.mod``, never hard-coded) with its tagged ``v0.<minor>.<patch>`` release.
etcd is built the same way from ``go.etcd.io/etcd/server/v3``; kwok is a plain
``go install``. What a real node runs is built by :mod:`kaito_core.testing.build_node`.
Karpenter's kwok cloud provider (the real Karpenter controller, :mod:`kaito_core.testing.karpenter`
runs it) is one ``go install`` too. Everything lands in one cache folder keyed by the versions, so a
second call is instant.
``KUBEBUILDER_ASSETS`` (envtest's variable) overrides the folder and its binaries are used as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kaito_core.testing.versions import (
    ETCD_VERSION,
    HELM_VERSION,
    KARPENTER_VERSION,
    KUBERNETES_VERSION,
    KWOK_VERSION,
    MIN_GO_VERSION,
    staging_version,
)

__all__ = [
    "ALL_BINARIES",
    "KUBERNETES_BINARIES",
    "NODE_KUBERNETES_BINARIES",
    "ToolchainMissingError",
    "asset_dir",
    "ensure_binaries",
    "ensure_karpenter",
    "karpenter_dir",
    "karpenter_module_dir",
    "kwok_stages_dir",
]

KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = (*KUBERNETES_BINARIES, "etcd", "kwok")
OPTIONAL_BINARIES = ("helm",)
# A real node's kubelet and kube-proxy: the same release, built from the same wrapper module.
NODE_KUBERNETES_BINARIES = ("kubelet", "kube-proxy")

Progress = Callable[[str], None]


class ToolchainMissingError(RuntimeError):
    """The Go toolchain needed to build the control plane is absent or too old."""


def _default_progress(message: str) -> None:
    print(f"[kaito-core build] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """Where built binaries live: ``$KAITO_CACHE_DIR`` or the user's cache folder."""
    override = os.environ.get("KAITO_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-core"


def asset_dir() -> Path:
    """The folder holding the binaries (``KUBEBUILDER_ASSETS`` wins when set)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Path(assets)
    key = f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
    return cache_root() / "bin" / key


def karpenter_dir() -> Path:
    """The folder holding ``karpenter-kwok``, Karpenter with its kwok cloud provider (keyed by its version)."""
    return cache_root() / "bin" / f"karpenter-{KARPENTER_VERSION}"


def kwok_stages_dir() -> Path:
    """kwok 0.8 needs stage definitions; we copy the 'fast' ones from its module."""
    return asset_dir() / "kwok-stages"


def _go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainMissingError(
            "Go is not installed, and it is needed to build kube-apiserver, etcd and kwok "
            f"from source. Install Go >= {MIN_GO_VERSION[0]}.{MIN_GO_VERSION[1]} "
            "(https://go.dev/dl/ or your distribution's golang package) and put it on PATH, "
            "or set KUBEBUILDER_ASSETS to a folder holding kube-apiserver, etcd, "
            "kube-controller-manager, kube-scheduler, kubectl and kwok, or set "
            "KAITO_TEST_KUBECONFIG to use an existing cluster."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MIN_GO_VERSION:
        raise ToolchainMissingError(
            f"{go} is {out.stdout.strip() or 'of unknown version'}; Kubernetes "
            f"{KUBERNETES_VERSION} needs Go >= {MIN_GO_VERSION[0]}.{MIN_GO_VERSION[1]}. "
            "Install a newer Go from https://go.dev/dl/."
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def _run(
    args: list[str], cwd: Path, progress: Progress, what: str, extra_env: dict[str, str] | None = None
) -> str:
    """Run a go command, printing a heartbeat so a long cold build is visibly alive."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            progress(f"{what}: still working ({time.monotonic() - started:.0f}s)")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run(
            args, cwd=cwd, env={**_go_env(), **(extra_env or {})}, capture_output=True, text=True
        )
    finally:
        done.set()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({' '.join(args)}) in {cwd}:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    progress(f"{what}: done in {time.monotonic() - started:.0f}s")
    return proc.stdout


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Two test runs building at once would race on the same output files."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _module_info(go: str, module: str, workdir: Path, progress: Progress) -> dict[str, str]:
    out = _run([go, "mod", "download", "-json", module], workdir, progress, f"download {module}")
    info: dict[str, str] = json.loads(out)
    return info


def _staging_replacements(gomod_text: str) -> list[str]:
    """The staging modules a published kubernetes go.mod replaces with local folders."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s*=>\s*\./staging/", gomod_text, re.M)))


def _build_kubernetes(
    go: str, out: Path, src: Path, progress: Progress, names: tuple[str, ...] = KUBERNETES_BINARIES
) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text("module kaito.local/k8sbuild\n\ngo 1.26.0\n")
    info = _module_info(go, f"k8s.io/kubernetes@{KUBERNETES_VERSION}", src, progress)
    staging = _staging_replacements(Path(info["GoMod"]).read_text())
    if not staging:
        raise RuntimeError(f"no staging replacements found in {info['GoMod']}")
    version = staging_version()
    lines = [
        "module kaito.local/k8sbuild",
        "",
        "go 1.26.0",
        "",
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}",
        "",
        "replace (",
        *(f"\t{mod} => {mod} {version}" for mod in staging),
        ")",
        "",
    ]
    (src / "go.mod").write_text("\n".join(lines))
    # Every command either build may want is imported, so one go.sum serves both.
    everything = (*KUBERNETES_BINARIES, *NODE_KUBERNETES_BINARIES)
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{name}"' for name in everything)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run([go, "mod", "tidy"], src, progress, f"resolve kubernetes {KUBERNETES_VERSION} modules")
    _, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    xflags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        xflags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={stamp}",
        ]
    ldflags = " ".join(["-s", "-w", *xflags])
    staging_dir = out / ".partial"
    staging_dir.mkdir(parents=True, exist_ok=True)
    pkgs = [f"k8s.io/kubernetes/cmd/{name}" for name in names]
    progress(f"compiling {', '.join(names)} (the cold build takes a while on few cores)")
    _run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging_dir) + "/", *pkgs],
        src,
        progress,
        f"build kubernetes {KUBERNETES_VERSION}",
    )
    for name in names:
        os.replace(staging_dir / name, out / name)
    staging_dir.rmdir()


_ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def _build_etcd(go: str, out: Path, src: Path, progress: Progress) -> None:
    src.mkdir(parents=True, exist_ok=True)
    siblings = ("api/v3", "client/pkg/v3", "client/v3", "pkg/v3", "server/v3")
    requires = "\n".join(f"\tgo.etcd.io/etcd/{mod} {ETCD_VERSION}" for mod in siblings)
    (src / "go.mod").write_text(f"module kaito.local/etcdbuild\n\ngo 1.26.0\n\nrequire (\n{requires}\n)\n")
    (src / "main.go").write_text(_ETCD_MAIN)
    _run([go, "mod", "tidy"], src, progress, f"resolve etcd {ETCD_VERSION} modules")
    _run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
        src,
        progress,
        f"build etcd {ETCD_VERSION}",
    )


def _build_go_install(
    go: str, out: Path, src: Path, package: str, *, ldflags: str, progress: Progress
) -> None:
    """``go install pkg@version`` for modules without replace directives (kwok, helm)."""
    src.mkdir(parents=True, exist_ok=True)
    _run(
        [go, "install", "-trimpath", "-ldflags", ldflags, package],
        src,
        progress,
        f"go install {package}",
        extra_env={"GOBIN": str(out)},
    )


def _copy_kwok_stages(go: str, out: Path, src: Path, progress: Progress) -> None:
    info = _module_info(go, f"sigs.k8s.io/kwok@{KWOK_VERSION}", src, progress)
    module_dir = Path(info["Dir"])
    target = out / "kwok-stages"
    target.mkdir(parents=True, exist_ok=True)
    # The "fast" stages make nodes Ready and pods Running at once and let pods of
    # Jobs complete; the lease heartbeat keeps kube-controller-manager's node
    # lifecycle controller from marking simulated nodes unreachable.
    for folder in ("node/fast", "node/heartbeat-with-lease", "pod/fast"):
        for stage in sorted((module_dir / "kustomize" / "stage" / folder).glob("*.yaml")):
            if stage.name == "kustomization.yaml":
                continue
            shutil.copyfile(stage, target / stage.name)
            os.chmod(target / stage.name, 0o644)


def ensure_binaries(names: tuple[str, ...] = ALL_BINARIES, progress: Progress | None = None) -> Path:
    """Make sure every named binary exists in :func:`asset_dir`; build what is missing.

    Returns the folder. Idempotent: when everything is present it returns at once.
    """
    report = progress or _default_progress
    out = asset_dir()
    missing = [name for name in names if not (out / name).exists()]
    if "kwok" in names and not kwok_stages_dir().exists():
        missing.append("kwok-stages")
    if not missing:
        return out
    if os.environ.get("KUBEBUILDER_ASSETS"):
        raise FileNotFoundError(
            f"KUBEBUILDER_ASSETS={out} lacks {', '.join(missing)}; add them there or unset "
            "KUBEBUILDER_ASSETS to build them into the cache"
        )
    go = _go_binary()
    src_root = cache_root() / "src"
    with _build_lock(out):
        missing = [name for name in names if not (out / name).exists()]
        report(f"building {', '.join(missing) or 'kwok stages'} into {out}")
        if any(name in missing for name in KUBERNETES_BINARIES):
            _build_kubernetes(go, out, src_root / f"kubernetes-{KUBERNETES_VERSION}", report)
        if "etcd" in missing:
            _build_etcd(go, out, src_root / f"etcd-{ETCD_VERSION}", report)
        if "kwok" in missing:
            ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION}"
            _build_go_install(
                go,
                out,
                src_root,
                f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
                ldflags=ldflags,
                progress=report,
            )
        if "kwok" in names and not kwok_stages_dir().exists():
            _copy_kwok_stages(go, out, src_root, report)
        if "helm" in missing:
            ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
            _build_go_install(
                go,
                out,
                src_root,
                f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
                ldflags=ldflags,
                progress=report,
            )
    return out


KARPENTER_MODULE = "sigs.k8s.io/karpenter"
KARPENTER_BINARY = "karpenter-kwok"


def karpenter_module_dir(progress: Progress | None = None) -> Path:
    """Karpenter's module in the Go module cache (its CRDs: ``pkg/apis/crds``, ``kwok/apis/crds``)."""
    report = progress or _default_progress
    src = cache_root() / "src"
    src.mkdir(parents=True, exist_ok=True)
    info = _module_info(_go_binary(), f"{KARPENTER_MODULE}@{KARPENTER_VERSION}", src, report)
    return Path(info["Dir"])


def ensure_karpenter(progress: Progress | None = None) -> Path:
    """Build Karpenter's kwok cloud provider once (``go install sigs.k8s.io/karpenter/kwok``); its path.

    The binary is named ``karpenter-kwok`` so that it is never mistaken for kwok itself.
    """
    report = progress or _default_progress
    out = karpenter_dir()
    binary = out / KARPENTER_BINARY
    if binary.exists():
        return binary
    go = _go_binary()
    with _build_lock(out):
        if not binary.exists():
            staging_dir = out / ".partial"
            staging_dir.mkdir(parents=True, exist_ok=True)
            ldflags = f"-s -w -X {KARPENTER_MODULE}/pkg/operator.Version={KARPENTER_VERSION}"
            _build_go_install(go, staging_dir, cache_root() / "src",
                              f"{KARPENTER_MODULE}/kwok@{KARPENTER_VERSION}", ldflags=ldflags, progress=report)
            os.replace(staging_dir / "kwok", binary)
            staging_dir.rmdir()
    return binary
