"""Revisions: a hash of the Workspace's desired state, and a short ControllerRevision history.

The hash of ``resource``, ``inference`` and ``tuning`` goes into the ``kaito.sh/revision``
annotation of the Workspace and of everything made from it, so a change is seen once; a
ControllerRevision per distinct spec (``<workspace>-<hash>``, numbered) keeps the last few.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from kaito_core.api import LABEL_WORKSPACE, Workspace
from kaito_core.controllers.workspace.context import owner_reference
from kaito_core.controllers.workspace.naming import revision_name

__all__ = ["REVISION_HASH_ANNOTATION", "controller_revision", "prune_revisions", "spec_hash"]

REVISION_HASH_ANNOTATION = "kaito.sh/revision-hash"


def spec_hash(ws: Workspace) -> str:
    """A stable short hash of the desired state (resource, inference, tuning)."""
    blob = json.dumps(ws.spec_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _revision_number(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("revision", 0))
    except (TypeError, ValueError):
        return 0


def controller_revision(ws: Workspace, digest: str, existing: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ControllerRevision for this spec; its number follows the highest existing one."""
    number = max((_revision_number(r) for r in existing), default=0) + 1
    return {
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision_name(ws.name, digest), "namespace": ws.namespace,
                     "labels": {LABEL_WORKSPACE: ws.name},
                     "annotations": {REVISION_HASH_ANNOTATION: digest},
                     "ownerReferences": [owner_reference(ws)]},
        "data": ws.spec_dict(),
        "revision": number,
    }


def prune_revisions(revisions: Sequence[dict[str, Any]], keep: int, current: str) -> list[str]:
    """Names of the oldest revisions beyond ``keep`` (never the current one)."""
    ordered = sorted(revisions, key=_revision_number, reverse=True)
    out = []
    for index, rev in enumerate(ordered):
        name = str((rev.get("metadata") or {}).get("name", ""))
        if index >= keep and name != current:
            out.append(name)
    return out
