"""Who may call a Workspace's inference server: a bearer token from a Secret.

The runtime answers 401 to every path but the probes' without ``Authorization: Bearer <token>``
when ``$KAITO_API_KEY`` is set (``kaito_presets.runtime.inference.limits``). Which Secret holds
the token (key ``api-key``):

* ``kaito.sh/api-key-secret: <name>``: the user's own Secret in the Workspace's namespace;
* ``kaito.sh/api-key-secret: none``: no token, on purpose (say so: the default below is safer);
* neither, with ``kaito.sh/enablelb: "True"``: a public LoadBalancer never starts open, so the
  operator makes ``<workspace>-api-key`` with a random token, owned by the Workspace (deleted
  with it), created once and never rewritten (clients keep their token across reconciles);
* neither, without a LoadBalancer: no token (the ClusterIP Service is reachable only in-cluster,
  as in Kaito).

Only the preset's pods get the token; an ``inference.template`` runs the user's own server,
which authenticates as it likes. A Workspace may name only a Secret of its own namespace, which
a pod its author could create may read anyway: no privilege beyond creating a pod.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from kaito_core.api import ANNOTATION_API_KEY_SECRET, ANNOTATION_ENABLE_LB, Workspace
from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.context import BuildContext

__all__ = ["API_KEY_SECRET_KEY", "NO_AUTH", "api_key_env", "api_key_secret", "generated_api_key_secret",
           "load_balanced"]

#: The key of the Secret that holds the token.
API_KEY_SECRET_KEY: Final = "api-key"
#: The annotation value that turns authentication off.
NO_AUTH: Final = "none"


def load_balanced(ws: Workspace) -> bool:
    """``kaito.sh/enablelb: "True"`` (any case): the Service is a LoadBalancer."""
    return ws.annotations.get(ANNOTATION_ENABLE_LB, "").lower() == "true"


def _generated_name(ws: Workspace) -> str:
    return f"{ws.name}-api-key"


def api_key_secret(ws: Workspace) -> str | None:
    """The Secret whose ``api-key`` the server requires, or None for no authentication."""
    named = ws.annotations.get(ANNOTATION_API_KEY_SECRET, "").strip()
    if named:
        return None if named.lower() == NO_AUTH else named
    return _generated_name(ws) if load_balanced(ws) else None


def api_key_env(ws: Workspace) -> list[dict[str, Any]]:
    """The inference container's ``KAITO_API_KEY`` from the Secret (nothing without one)."""
    name = api_key_secret(ws)
    if name is None:
        return []
    return [{"name": rt.API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": API_KEY_SECRET_KEY}}}]


def generated_api_key_secret(ctx: BuildContext) -> dict[str, Any] | None:
    """The Secret the operator makes for a LoadBalancer Workspace that named none (else None).

    A fresh random token each call: the caller creates it only when it does not exist, never applies it.
    """
    ws = ctx.ws
    if ws.annotations.get(ANNOTATION_API_KEY_SECRET, "").strip() or not load_balanced(ws):
        return None
    meta = ctx.metadata(_generated_name(ws))
    meta.pop("annotations", None)  # not a revisioned object: the token outlives spec changes
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "stringData": {API_KEY_SECRET_KEY: secrets.token_hex(32)}}
