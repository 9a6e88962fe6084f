"""ResourceKind: what the engine needs to reach any kind over REST, built-in or CRD.

The engine works on plain dicts through raw paths, so a kind is just its
group/version/kind/plural and whether it is namespaced. Every ResourceKind
created registers itself, so ``Client.apply(obj)`` can find the kind from
``apiVersion``/``kind`` without being told.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "CONFIGMAP",
    "CRD",
    "DAEMONSET",
    "DEPLOYMENT",
    "EVENT",
    "JOB",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "SECRET",
    "SERVICE",
    "SERVICEACCOUNT",
    "STATEFULSET",
    "ResourceKind",
    "kind_of",
    "object_key",
]

_REGISTRY: dict[tuple[str, str], ResourceKind] = {}


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """A Kubernetes kind as the REST API names it (hashable: used as a cache key)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    def __post_init__(self) -> None:
        _REGISTRY.setdefault((self.api_version, self.kind), self)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        """A short human name for logs and metrics, e.g. ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path; no namespace on a namespaced kind means across all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    @staticmethod
    def lookup(api_version: str, kind: str) -> ResourceKind | None:
        """The registered kind for an object's ``apiVersion``/``kind``, if any."""
        return _REGISTRY.get((api_version, kind))

    def __str__(self) -> str:
        return self.name


def kind_of(obj: Mapping[str, Any]) -> ResourceKind:
    """The ResourceKind of an object dict (it must have been declared somewhere)."""
    found = ResourceKind.lookup(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if found is None:
        raise LookupError(f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}: "
                          "declare it with ResourceKind(...) or pass kind=")
    return found


def object_key(obj: Mapping[str, Any]) -> tuple[str | None, str]:
    """(namespace, name) of an object dict."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or None, str(meta.get("name", ""))


CONFIGMAP = ResourceKind("", "v1", "ConfigMap", "configmaps")
SECRET = ResourceKind("", "v1", "Secret", "secrets")
SERVICE = ResourceKind("", "v1", "Service", "services")
SERVICEACCOUNT = ResourceKind("", "v1", "ServiceAccount", "serviceaccounts")
POD = ResourceKind("", "v1", "Pod", "pods")
PERSISTENTVOLUMECLAIM = ResourceKind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
NODE = ResourceKind("", "v1", "Node", "nodes", namespaced=False)
NAMESPACE = ResourceKind("", "v1", "Namespace", "namespaces", namespaced=False)
EVENT = ResourceKind("", "v1", "Event", "events")
DEPLOYMENT = ResourceKind("apps", "v1", "Deployment", "deployments")
STATEFULSET = ResourceKind("apps", "v1", "StatefulSet", "statefulsets")
DAEMONSET = ResourceKind("apps", "v1", "DaemonSet", "daemonsets")
JOB = ResourceKind("batch", "v1", "Job", "jobs")
LEASE = ResourceKind("coordination.k8s.io", "v1", "Lease", "leases")
CRD = ResourceKind("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                   namespaced=False)
