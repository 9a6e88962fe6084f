"""The ResourceKinds the Workspace controller reads and writes that the engine does not declare."""

from __future__ import annotations

from kaito_core.api import GROUP, STORAGE_VERSION, WORKSPACE_KIND, WORKSPACE_PLURAL
from kaito_core.engine import ResourceKind
from kaito_core.provisioning import MACHINE

__all__ = ["CONTROLLERREVISION", "MACHINE", "WORKSPACE"]

#: Workspaces in their storage version (v1beta1); v1alpha1 objects read back the same.
WORKSPACE = ResourceKind(GROUP, STORAGE_VERSION, WORKSPACE_KIND, WORKSPACE_PLURAL)
#: MACHINE (cluster-scoped, one per GPU node kaito-core provisions) is the provisioning layer's.
#: apps/v1 ControllerRevision: the Workspace's spec history.
CONTROLLERREVISION = ResourceKind("apps", "v1", "ControllerRevision", "controllerrevisions")
