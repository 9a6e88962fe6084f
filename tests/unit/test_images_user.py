"""Every image we ship runs as a non-root user (the restricted Pod Security profile's runAsNonRoot
needs a numeric USER the kubelet can check), and its last USER is not root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

IMAGES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "images").glob("*.Containerfile"))


def test_the_images_are_found() -> None:
    assert {p.name for p in IMAGES} >= {"controller.Containerfile", "runtime.Containerfile",
                                        "runtime-vllm.Containerfile", "curl.Containerfile"}


@pytest.mark.parametrize("containerfile", IMAGES, ids=lambda p: p.name)
def test_the_last_user_is_numeric_and_not_root(containerfile: Path) -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", containerfile.read_text())
    assert users, f"{containerfile.name} has no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"{containerfile.name}: USER {users[-1]} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) != 0)
