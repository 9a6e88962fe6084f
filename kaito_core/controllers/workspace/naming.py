"""Deterministic names for everything the Workspace controller creates.

A name is a function of the Workspace (namespace/name) and, for Machines, the
slot index; so a crash or a stale cache can never make a second object for the
same thing: the second create answers AlreadyExists.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "MAX_NAME",
    "config_map_name",
    "headless_service_name",
    "machine_name",
    "machine_prefix",
    "machine_slot",
    "revision_name",
    "short_hash",
    "truncate",
]

MAX_NAME = 63


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def truncate(name: str, limit: int = MAX_NAME, suffix: str = "") -> str:
    """``name + suffix`` within ``limit`` chars; when cut, a hash keeps it unique, no trailing '-'."""
    if len(name) + len(suffix) <= limit:
        return name + suffix
    keep = limit - len(suffix) - 9
    return f"{name[:keep].rstrip('-')}-{short_hash(name, 8)}{suffix}"


def machine_prefix(namespace: str, name: str) -> str:
    """``ws<hash>``: the Machine name prefix of one Workspace (Machines are cluster-scoped)."""
    return f"ws{short_hash(f'{namespace}/{name}', 10)}"


def machine_name(namespace: str, name: str, slot: int) -> str:
    """``ws<hash>-<slot>``: letters and digits only, well under 63 chars, a valid node name too."""
    if slot < 0:
        raise ValueError("slot must be >= 0")
    return f"{machine_prefix(namespace, name)}-{slot}"


def machine_slot(namespace: str, name: str, machine: str) -> int | None:
    """The slot of a Machine name of this Workspace, or None when it is not one of its names."""
    prefix = machine_prefix(namespace, name) + "-"
    if not machine.startswith(prefix):
        return None
    rest = machine[len(prefix):]
    return int(rest) if rest.isdigit() else None


def headless_service_name(workspace: str) -> str:
    return truncate(workspace, suffix="-headless")


def config_map_name(workspace: str, purpose: str) -> str:
    """``<workspace>-<purpose>-config`` (the default inference or tuning ConfigMap)."""
    return truncate(workspace, 253, f"-{purpose}-config")


def revision_name(workspace: str, digest: str) -> str:
    return truncate(workspace, 253, f"-{digest}")
