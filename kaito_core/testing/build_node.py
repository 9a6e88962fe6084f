"""Build what a real node runs, from source through the Go module proxy, into the build cache.

The kubelet and kube-proxy of the control plane's Kubernetes release come from the same wrapper
module (:mod:`kaito_core.testing.build`), into the same folder; containerd (with ctr and its runc
shim) is one ``go install`` with the cgo-only storage drivers tagged out; CoreDNS is one ``go
install``; the pod sandbox's ``pause`` is a few lines of Go of our own. Nothing present is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kaito_core.testing.build import (
    NODE_KUBERNETES_BINARIES,
    Progress,
    _build_kubernetes,
    _build_lock,
    _default_progress,
    _go_binary,
    _run,
    asset_dir,
    cache_root,
)
from kaito_core.testing.versions import KUBERNETES_VERSION

__all__ = [
    "CONTAINERD_BINARIES",
    "CONTAINERD_VERSION",
    "COREDNS_VERSION",
    "NODE_BINARIES",
    "containerd_dir",
    "coredns_dir",
    "ensure_node_binaries",
    "ensure_pause_binary",
    "pause_hash",
]

# What a real node runs: the kubelet and kube-proxy of the same Kubernetes release
# (built from the same wrapper module, into the same folder), and containerd with
# its CLI and runc shim (built into a folder keyed by the containerd version).
CONTAINERD_VERSION = "v2.2.1"
CONTAINERD_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")
# Cluster DNS of the real nodes (Services and pods by name, as distributed inference's MASTER_ADDR
# needs): CoreDNS, what kubeadm and AKS run, built from the Go module proxy like containerd.
COREDNS_VERSION = "v1.15.0"
NODE_BINARIES = (*NODE_KUBERNETES_BINARIES, *CONTAINERD_BINARIES, "coredns")
# Storage and snapshot drivers a test node never uses (they need cgo or kernel headers).
CONTAINERD_BUILD_TAGS = "no_btrfs no_devmapper no_zfs"


def coredns_dir() -> Path:
    """The folder holding coredns (keyed by its version)."""
    return cache_root() / "bin" / f"coredns-{COREDNS_VERSION}"


def containerd_dir() -> Path:
    """The folder holding containerd, ctr and containerd-shim-runc-v2 (keyed by their version)."""
    return cache_root() / "bin" / f"containerd-{CONTAINERD_VERSION}"


def _build_coredns(go: str, out: Path, src: Path, progress: Progress) -> None:
    """CoreDNS with its default plugins (kubernetes, cache, errors, ...): one ``go install``."""
    src.mkdir(parents=True, exist_ok=True)
    staging_dir = out / ".partial"
    staging_dir.mkdir(parents=True, exist_ok=True)
    _run(
        [go, "install", "-trimpath", "-ldflags", "-s -w", f"github.com/coredns/coredns@{COREDNS_VERSION}"],
        src,
        progress,
        f"build coredns {COREDNS_VERSION}",
        extra_env={"GOBIN": str(staging_dir), "CGO_ENABLED": "0"},
    )
    os.replace(staging_dir / "coredns", out / "coredns")
    staging_dir.rmdir()


def _build_containerd(go: str, out: Path, src: Path, progress: Progress) -> None:
    """containerd, ctr and the runc v2 shim: one ``go install`` of its three commands."""
    src.mkdir(parents=True, exist_ok=True)
    module = "github.com/containerd/containerd/v2"
    ldflags = f"-s -w -X {module}/version.Version={CONTAINERD_VERSION} -X {module}/version.Revision=kaito"
    pkgs = [f"{module}/cmd/{name}@{CONTAINERD_VERSION}" for name in CONTAINERD_BINARIES]
    staging_dir = out / ".partial"
    staging_dir.mkdir(parents=True, exist_ok=True)
    _run(
        [go, "install", "-trimpath", "-tags", CONTAINERD_BUILD_TAGS, "-ldflags", ldflags, *pkgs],
        src,
        progress,
        f"build containerd {CONTAINERD_VERSION}",
        extra_env={"GOBIN": str(staging_dir)},
    )
    for name in CONTAINERD_BINARIES:
        os.replace(staging_dir / name, out / name)
    staging_dir.rmdir()


def ensure_node_binaries(progress: Progress | None = None) -> dict[str, Path]:
    """Build what a real node needs (kubelet, kube-proxy, containerd, ctr, the runc shim, coredns).

    Returns the path of each binary by name. kubelet and kube-proxy sit beside the
    control plane in :func:`asset_dir` (same release, same wrapper module); containerd
    sits in :func:`containerd_dir`. Nothing present is rebuilt.
    """
    report = progress or _default_progress
    kube_out = asset_dir()
    ctrd_out = containerd_dir()
    paths = {name: kube_out / name for name in NODE_KUBERNETES_BINARIES}
    paths.update({name: ctrd_out / name for name in CONTAINERD_BINARIES})
    paths["coredns"] = coredns_dir() / "coredns"
    if all(path.exists() for path in paths.values()):
        return paths
    kube_missing = tuple(name for name in NODE_KUBERNETES_BINARIES if not paths[name].exists())
    if kube_missing and os.environ.get("KUBEBUILDER_ASSETS"):
        raise FileNotFoundError(
            f"KUBEBUILDER_ASSETS={kube_out} lacks {', '.join(kube_missing)}; add them there or unset "
            "KUBEBUILDER_ASSETS to build them into the cache"
        )
    go = _go_binary()
    src_root = cache_root() / "src"
    if kube_missing:
        with _build_lock(kube_out):
            kube_missing = tuple(name for name in NODE_KUBERNETES_BINARIES if not paths[name].exists())
            if kube_missing:
                report(f"building {', '.join(kube_missing)} into {kube_out}")
                _build_kubernetes(
                    go, kube_out, src_root / f"kubernetes-{KUBERNETES_VERSION}", report, kube_missing
                )
    if not all(paths[name].exists() for name in CONTAINERD_BINARIES):
        with _build_lock(ctrd_out):
            if not all(paths[name].exists() for name in CONTAINERD_BINARIES):
                report(f"building containerd {CONTAINERD_VERSION} into {ctrd_out}")
                _build_containerd(go, ctrd_out, src_root / f"containerd-{CONTAINERD_VERSION}", report)
    if not paths["coredns"].exists():
        with _build_lock(coredns_dir()):
            if not paths["coredns"].exists():
                report(f"building coredns {COREDNS_VERSION} into {coredns_dir()}")
                _build_coredns(go, coredns_dir(), src_root / f"coredns-{COREDNS_VERSION}", report)
    return paths


PAUSE_SOURCE = """package main

// The pod sandbox's process: hold the namespaces, reap zombies, exit on SIGINT/SIGTERM.
import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsigs := make(chan os.Signal, 8)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sigs {
\t\tif s != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tpid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


def pause_hash() -> str:
    """Twelve hex digits naming the pause program (its source); the sandbox image tag uses it."""
    return hashlib.sha256(PAUSE_SOURCE.encode()).hexdigest()[:12]


def ensure_pause_binary(progress: Progress | None = None) -> Path:
    """A static pause binary (the sandbox image's only file), built once into the cache."""
    report = progress or _default_progress
    out = cache_root() / "bin" / f"pause-{pause_hash()}"
    binary = out / "pause"
    if binary.exists():
        return binary
    go = _go_binary()
    with _build_lock(out):
        if not binary.exists():
            src = cache_root() / "src" / f"pause-{pause_hash()}"
            src.mkdir(parents=True, exist_ok=True)
            (src / "go.mod").write_text("module kaito.local/pause\n\ngo 1.26.0\n")
            (src / "main.go").write_text(PAUSE_SOURCE)
            _run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / ".pause.partial"), "."],
                 src, report, "build pause")
            os.replace(out / ".pause.partial", binary)
    return binary
