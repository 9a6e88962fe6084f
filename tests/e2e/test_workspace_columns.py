"""``kubectl get workspace`` prints what the seed walkthrough shows (../shared/examples/README.md): the same
plain columns for inference and tuning Workspaces ("Its kubectl get workspace shows the same columns"), and
the tuning conditions JobStarted / WorkspaceSucceeded under ``-o wide``."""

from __future__ import annotations

import pytest
from workspace_support import EXAMPLES, eventually, get_workspace_columns, is_true, kubectl, running_controller

from kaito_core.controllers.workspace import WORKSPACE
from kaito_core.testing import Cluster

pytestmark = pytest.mark.e2e

#: The header of the seed's listing, word for word.
SEED_COLUMNS = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]


async def test_tuning_listing_has_the_seeds_columns_and_wide_adds_the_tuning_ones(
        kube_cluster: Cluster, kube_namespace: str) -> None:
    ns, name = kube_namespace, "workspace-tuning-phi-3"
    async with running_controller(kube_cluster, ns) as (_, client):
        await kubectl(kube_cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "kaito_workspace_tuning_phi_3.yaml"))

        async def succeeded() -> bool:
            return is_true(await client.get_or_none(WORKSPACE, name, ns), "WorkspaceSucceeded")

        await eventually(succeeded, 120, message="WorkspaceSucceeded")
        plain = await get_workspace_columns(kube_cluster, ns, name)
        assert list(plain) == SEED_COLUMNS, plain
        assert (plain["INSTANCE"], plain["RESOURCEREADY"], plain["WORKSPACEREADY"]) == \
            ("Standard_NC6s_v3", "True", "True"), plain
        wide = await get_workspace_columns(kube_cluster, ns, name, wide=True)
        assert list(wide) == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
                              "WORKSPACESUCCEEDED", "WORKSPACEREADY", "AGE"], wide
        assert wide["JOBSTARTED"] == "True" and wide["WORKSPACESUCCEEDED"] == "True", wide
