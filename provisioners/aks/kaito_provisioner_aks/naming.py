"""Deterministic agent-pool names: the same Machine always maps to the same pool.

AKS allows ``^[a-z][a-z0-9]{0,11}$`` for Linux pools. A pool name is a short
readable prefix taken from the Machine's name (its first letter and up to three
more letters or digits) followed by a base-36 hash of the Machine's identity,
12 characters in all: about 41 bits of hash, so two Machines colliding on the
same cluster is a one-in-a-trillion event, and the name survives a controller
restart because nothing random goes into it.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["POOL_NAME_RE", "pool_name"]

POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_MAX = 12
_PREFIX = 4
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 36)
        out.append(_DIGITS[digit])
    return "".join(out)


def pool_name(machine_name: str, namespace: str | None = None) -> str:
    """The agent-pool name for a Machine (``namespace`` only when Machines are namespaced)."""
    if not machine_name:
        raise ValueError("a Machine without a name has no agent-pool name")
    alnum = re.sub(r"[^a-z0-9]", "", machine_name.lower())
    first_letter = re.search(r"[a-z]", alnum)
    prefix = alnum[first_letter.start():][:_PREFIX] if first_letter else "k"
    identity = f"{namespace}/{machine_name}" if namespace else machine_name
    digest = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:16], "big")
    name = prefix + _base36(digest, _MAX - len(prefix))
    assert POOL_NAME_RE.match(name), name
    return name
