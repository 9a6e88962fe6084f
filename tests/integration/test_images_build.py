"""kaito-core's images, built from source with no registry, run under podman as a kubelet would run them."""

from __future__ import annotations

import subprocess
import tarfile
import time
from pathlib import Path

import images_support
import pytest

from kaito_core.testing.images import ImageRef, ensure_images
from kaito_core.testing.podman import ContainerHandle, Podman

pytestmark = pytest.mark.runtime
runtime_images = images_support.runtime_images
podman = images_support.podman


def completed(result: ContainerHandle | subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert isinstance(result, subprocess.CompletedProcess)
    return result


def test_the_runtime_image_imports_every_runtime_dependency_as_uid_1000(
    runtime_images: dict[str, ImageRef], podman: Podman
) -> None:
    imports = "import kaito_presets.runtime.inference, torch, transformers, peft, trl, oras, huggingface_hub"
    script = f"{imports}; import os, sys; print(os.getuid(), os.getcwd(), sys.prefix, os.environ.get('HF_HUB_OFFLINE'))"
    done = completed(podman.run(runtime_images["runtime"].tag, ["python", "-c", script], user="1000"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "/workspace", "/opt/kaito/venv", "None"]


def test_the_runtime_image_has_writable_mount_points_and_a_termination_log(
    runtime_images: dict[str, ImageRef], podman: Podman
) -> None:
    folders = "/workspace/weights /mnt/adapter /mnt/data /mnt/results"
    script = f"for d in {folders}; do touch $d/probe || exit 1; done; echo finished > /dev/termination-log"
    handle = podman.run(runtime_images["runtime"].tag, ["sh", "-c", script], detach=True, termination_log=True)
    assert isinstance(handle, ContainerHandle)
    assert handle.wait(timeout=60) == 0, handle.logs()
    assert handle.exit_code() == 0
    assert handle.termination_message() == "finished\n"


def test_the_controller_image_runs_kaito_and_has_no_torch(runtime_images: dict[str, ImageRef], podman: Podman) -> None:
    image = runtime_images["controller"].tag
    done = completed(podman.run(image, ["--help"]))
    assert done.returncode == 0, done.stderr
    assert "controller" in done.stdout
    probe = completed(podman.run(image, ["-c", "import torch"], entrypoint="python"))
    assert probe.returncode != 0
    assert "No module named 'torch'" in probe.stderr
    whoami = completed(
        podman.run(image, ["-c", "import os, kaito_provisioner_aks; print(os.getuid())"], entrypoint="python")
    )
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.strip() == "65532"


def test_the_curl_image_runs_curl(runtime_images: dict[str, ImageRef], podman: Podman) -> None:
    image = runtime_images["curl"].tag
    for command in (["curl", "--version"], ["--version"]):
        done = completed(podman.run(image, command))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("curl ")


def test_an_unchanged_tree_builds_nothing(runtime_images: dict[str, ImageRef]) -> None:
    # The tree may have moved since the session's fixture built (the working tree is shared): settle first.
    first = ensure_images(runtime_images, archives=False)
    started = time.monotonic()
    again = ensure_images(runtime_images, archives=False)
    assert time.monotonic() - started < 2
    assert {name: ref.tag for name, ref in again.items()} == {name: ref.tag for name, ref in first.items()}
    assert not any(ref.built for ref in again.values())


def test_an_image_is_saved_once_as_an_oci_archive(
    runtime_images: dict[str, ImageRef], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITO_IMAGE_CACHE", str(tmp_path))
    archive = ensure_images(["curl"])["curl"].archive
    assert archive is not None and archive.parent == tmp_path
    with tarfile.open(archive) as tar:
        assert {"oci-layout", "index.json"} <= set(tar.getnames())
    written = archive.stat().st_mtime_ns
    assert ensure_images(["curl"])["curl"].archive == archive
    assert archive.stat().st_mtime_ns == written
