"""Project sessions. They run in the development environment `./dev setup` made
(.venv, every distribution editable), so nothing is installed twice:

    .venv/bin/nox -s tests            # the whole suite (what `./dev test` runs)
    .venv/bin/nox -s lint typecheck   # ruff, import-linter, mypy --strict on kaito_core
    .venv/bin/nox -s controlplane     # build the control-plane binaries (cached)
    .venv/bin/nox -s crds             # regenerate deploy/crds from the models
    .venv/bin/nox -s docs             # regenerate the API reference, mkdocs build --strict
    .venv/bin/nox -s bench            # benchmarks/ -> benchmarks/results/
    .venv/bin/nox -s images           # our images from source; -- --push REGISTRY pushes them
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
PY = sys.executable  # the interpreter nox runs in: the dev venv's


@nox.session
def tests(session: nox.Session) -> None:
    """Every test: unit, real control plane, e2e on kwok, CPU runtimes, our images under podman."""
    session.run(PY, "-m", "kaito_core.testing")
    # The real nodes' kubelet, kube-proxy and containerd (tests/realnode), cached like the control plane.
    session.run(PY, "-m", "kaito_core.testing", "node")
    # The real Karpenter (its kwok cloud provider) that tests/karpenter runs the plugin against.
    session.run(PY, "-m", "kaito_core.testing", "karpenter")
    # Our images, built from source (cached by content hash): a cold build must not count against a
    # test's timeout, so it happens here, before pytest.
    session.run(PY, "-m", "kaito_core.testing.images", "--no-archives")
    session.run(PY, "-m", "pytest", *(session.posargs or ["tests"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (style and bugs) and import-linter (the layers of kaito_core)."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(str(Path(PY).parent / "lint-imports"), external=True)
    session.run(PY, "-m", "kaito_core.api.crd", "--check", "deploy/crds")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.run(PY, "-m", "mypy", "--strict", "kaito_core")


@nox.session
def controlplane(session: nox.Session) -> None:
    """Build kube-apiserver, etcd, controller-manager, scheduler, kubectl, kwok (and helm)."""
    session.run(PY, "-m", "kaito_core.testing", *session.posargs)


@nox.session
def crds(session: nox.Session) -> None:
    """Regenerate deploy/crds (and the Helm chart's copy) from the pydantic models."""
    for folder in ("deploy/crds", "deploy/charts/kaito-core/crds"):
        session.run(PY, "-m", "kaito_core.api.crd", "--write", folder)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the API reference from the models and build the site strictly."""
    session.run(PY, "-m", "kaito_core.api.docs", "docs/reference/api.md")
    session.run(PY, "-m", "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark under benchmarks/ and write figures to benchmarks/results/."""
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.log("no benchmarks yet under benchmarks/")
        return
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    for script in scripts:
        session.run(PY, str(script), *session.posargs)


@nox.session
def images(session: nox.Session) -> None:
    """Build kaito-core's images from source (cached by content hash); `-- --push REGISTRY` pushes them."""
    session.run(PY, "-m", "kaito_core.testing.images", *session.posargs)
