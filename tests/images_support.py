"""Fixtures for tests that run kaito-core's own images under podman (built from source, cached).

from images_support import podman, runtime_images  # noqa: F401  (fixtures)

def test_it(runtime_images, podman):
    done = podman.run(runtime_images["runtime"].tag, ["python", "-c", "..."], user="1000")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from kaito_core.testing.images import ImageRef, ToolMissingError, ensure_images
from kaito_core.testing.podman import Podman

IMAGE_NAMES = ("runtime", "controller", "curl")


@pytest.fixture(scope="session")
def runtime_images() -> dict[str, ImageRef]:
    """The images this tree builds to, by short name; the first call of a session builds what changed.

    No OCI archives (the runtime's takes a minute and a half to write): ``KAITO_IMAGE_ARCHIVES=1`` adds them,
    as ``python -m kaito_core.testing.images`` always does.
    """
    # ./dev test installs the tools; a missing one is a broken setup, never a reason to skip.
    missing = [tool for tool in ("podman", "buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"needs {', '.join(missing)}: apt-get install podman buildah mmdebstrap runc (./dev test does)")
    try:
        return ensure_images(IMAGE_NAMES, archives=os.environ.get("KAITO_IMAGE_ARCHIVES") == "1")
    except ToolMissingError as error:
        pytest.fail(str(error))


@pytest.fixture
def podman() -> Iterator[Podman]:
    """A podman client; every container it started is removed afterwards."""
    with Podman() as client:
        yield client
