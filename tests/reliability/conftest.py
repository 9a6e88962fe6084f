"""The reliability suite: fault injection against a private control plane per module.

Run it alone with ``pytest tests/reliability -m reliability``; sizes come from
``KAITO_RELIABILITY_*`` environment variables (see each module). At the end a table of every
scenario is printed and saved as benchmarks/results/reliability.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import RESULTS, ROOT, Fleet, table

from kaito_core.api.crd import all_crds
from kaito_core.testing import ControlPlane, ControlPlaneMode, install_crds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on a private plane need the full control plane: mark them so ``-m 'not controlplane'``
    (and ``-m 'not e2e'``) leave them out like the rest of the suite's control-plane tests."""
    for item in items:
        if "private_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.controlplane)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def private_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A full control plane of this module's own: tests may restart its apiserver or compact its etcd."""
    if os.environ.get("KAITO_TEST_KUBECONFIG"):
        pytest.skip("needs a private control plane it may restart; KAITO_TEST_KUBECONFIG points elsewhere")
    with ControlPlane(mode=ControlPlaneMode.FULL, workdir=tmp_path_factory.mktemp("plane") / "cp") as plane:
        yield plane


@pytest.fixture
async def fleet(private_plane: ControlPlane) -> AsyncIterator[Fleet]:
    """CRDs installed; informers in this process on the run's objects (call ``fleet.start(namespaces)``)."""
    watcher = await Fleet.connect(private_plane.kubeconfig)
    await install_crds(watcher.client, all_crds())
    try:
        yield watcher
    finally:
        await watcher.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("reliability")
    terminalreporter.write_line(table(RESULTS))
    out = ROOT / "benchmarks" / "results" / "reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if out.exists():
        try:
            previous = {row["scenario"]: row for row in json.loads(out.read_text()).get("rows", [])}
        except (ValueError, KeyError):
            previous = {}
    # Scenarios run now replace the earlier figures; the others are kept (a partial run updates its rows).
    previous.update({row.scenario: row.as_dict() for row in RESULTS})
    out.write_text(json.dumps({
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": list(previous.values()),
    }, indent=2) + "\n")
    terminalreporter.write_line(f"saved {Path(out).relative_to(ROOT)}")
