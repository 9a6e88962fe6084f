"""The Kubernetes "restricted" Pod Security profile, for every pod the operator writes itself.

Creating a Workspace never grants more than creating a pod in its namespace (the validator refuses
privileged templates and volume sources); the pods built from a preset go further and meet the
``restricted`` profile, so a namespace that enforces it (``pod-security.kubernetes.io/enforce:
restricted``) runs the seed examples unchanged. Our images run as an unprivileged user already
(``USER 1000`` in ``deploy/images/runtime.Containerfile``); the pod says so, so that a user's data
image run as an init container (``tuning.input.image``) runs as that user too.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CONTAINER_SECURITY_CONTEXT", "POD_SECURITY_CONTEXT", "RUNTIME_UID", "restricted"]

#: The runtime image's user and group (``deploy/images/runtime.Containerfile``).
RUNTIME_UID: Final = 1000
POD_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "runAsNonRoot": True,
    "runAsUser": RUNTIME_UID,
    "runAsGroup": RUNTIME_UID,
    "fsGroup": RUNTIME_UID,
    # a weights cache PVC is chowned once, not on every mount
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def restricted(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (a pod spec the operator built) made to meet the restricted profile; returns it."""
    spec["securityContext"] = {**POD_SECURITY_CONTEXT, "seccompProfile": {"type": "RuntimeDefault"}}
    spec["automountServiceAccountToken"] = False  # no pod of ours talks to the apiserver
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            container["securityContext"] = {**CONTAINER_SECURITY_CONTEXT, "capabilities": {"drop": ["ALL"]}}
    return spec
