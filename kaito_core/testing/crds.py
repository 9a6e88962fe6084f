"""Installing CustomResourceDefinitions into a test control plane and waiting until they are served.

``await install_crds(client, kaito_core.api.all_crds())`` (or any operator's own CRD documents):
each is applied server-side, then the call returns once every CRD is ``Established`` *and* a LIST of
each kind answers. The second check matters: an Established CRD can still answer 404 for a moment
while the apiserver's discovery catches up, and a controller started in that moment fails its first
list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kaito_core.engine import CRD, Client, NotFoundError, ResourceKind
from kaito_core.testing.waiting import condition_is_true, eventually

__all__ = ["install_crds", "served_kind"]

#: The field manager of the test kit's CRD applies (forced: a chart or kubectl may have applied them first).
FIELD_MANAGER = "kaito-core-testing"


def served_kind(crd: Mapping[str, Any]) -> ResourceKind:
    """The kind a CRD document serves, at its storage version (else its first served one)."""
    spec = crd["spec"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    version = next((v for v in served if v.get("storage")), served[0])
    return ResourceKind(spec["group"], version["name"], spec["names"]["kind"], spec["names"]["plural"],
                        namespaced=spec.get("scope", "Namespaced") == "Namespaced")


async def install_crds(client: Client, crds: Iterable[Mapping[str, Any]], *, timeout: float = 60.0) -> None:
    """Apply ``crds`` and wait until each is Established and its kind answers a LIST."""
    documents = list(crds)
    for crd in documents:
        await client.apply(crd, kind=CRD, force=True, field_manager=FIELD_MANAGER)
    kinds = [served_kind(crd) for crd in documents]

    async def served() -> bool:
        for crd in documents:
            if not condition_is_true(await client.get(CRD, crd["metadata"]["name"]), "Established"):
                return False
        try:
            for kind in kinds:
                await client.list_page(kind, limit=1)
        except NotFoundError:
            return False
        return True

    await eventually(served, timeout, message=f"CRDs {', '.join(c['metadata']['name'] for c in documents)} served")
