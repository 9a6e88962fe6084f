"""The install identity: what makes a Machine, its Node and its pool provably this install's."""

from __future__ import annotations

import pytest
from test_workspace_nodes import CATALOG, ws

from kaito_core.api import LABEL_INSTALL, Machine
from kaito_core.controllers.workspace.nodes import machine_manifest
from kaito_core.provisioning import node_labels_for
from kaito_core.provisioning.identity import InstallIdentity

ONE = InstallIdentity(cluster_id="3f1c9a52-0000-4000-8000-000000000001", namespace="kaito-system")


def test_the_value_is_a_label_value_that_differs_per_cluster_and_per_namespace() -> None:
    assert len(ONE.value) == 20 and ONE.value.isalnum()
    assert ONE.value == InstallIdentity(ONE.cluster_id, ONE.namespace).value  # stable across restarts
    assert ONE.value != InstallIdentity(ONE.cluster_id, "kaito-other").value
    assert ONE.value != InstallIdentity("another-cluster-uid", ONE.namespace).value


def test_owns_only_its_own_value() -> None:
    assert ONE.owns({LABEL_INSTALL: ONE.value, "kaito.sh/machine": "m"})
    assert not ONE.owns({"kaito.sh/machine": "m", "kaito.sh/provisioner": "aks"})  # our labels are no proof
    assert not ONE.owns({LABEL_INSTALL: InstallIdentity(ONE.cluster_id, "x").value})
    assert not ONE.owns(None) and not ONE.owns({})


@pytest.mark.parametrize(("cluster_id", "namespace"), [("", "ns"), ("uid", "")])
def test_an_identity_needs_both_parts(cluster_id: str, namespace: str) -> None:
    with pytest.raises(ValueError, match="cluster id and a namespace"):
        InstallIdentity(cluster_id, namespace)


def test_machines_carry_it_and_pass_it_on_to_their_node() -> None:
    w = ws()
    manifest = machine_manifest(w, 0, preset=CATALOG.model("phi-3-mini-4k-instruct"),
                                sku=CATALOG.sku("Standard_NC6s_v3"), install=ONE)
    assert manifest["metadata"]["labels"][LABEL_INSTALL] == ONE.value
    assert node_labels_for(Machine.from_dict(manifest), "simulated")[LABEL_INSTALL] == ONE.value
    bare = machine_manifest(w, 0, preset=None, sku=None)
    assert LABEL_INSTALL not in bare["metadata"]["labels"]
