"""The image tags and layer keys follow their inputs, and nothing else (no podman needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kaito_core.testing import image_plan, images
from kaito_core.testing.images import IMAGES, plan, requirements

REPO = Path(__file__).resolve().parents[2]
DISTS = {
    ".": "kaito_core",
    "presets": "kaito_presets",
    "provisioners/aks": "kaito_provisioner_aks",
    "provisioners/karpenter": "kaito_provisioner_karpenter",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small copy of the repository's distributions: their real pyproject files, a stub package each."""
    for folder, package in DISTS.items():
        source, target = REPO / folder, tmp_path / folder
        (target / package).mkdir(parents=True)
        shutil.copy(source / "pyproject.toml", target / "pyproject.toml")
        if (source / "README.md").exists():
            (target / "README.md").write_text("readme\n")
        (target / package / "__init__.py").write_text(f"NAME = {package!r}\n")
    return tmp_path


def tags(root: Path) -> dict[str, images.ImageRef]:
    return {name: plan(spec, root) for name, spec in IMAGES.items()}


def test_an_unchanged_tree_keeps_every_tag(tree: Path) -> None:
    first, second = tags(tree), tags(tree)
    assert {n: r.tag for n, r in first.items()} == {n: r.tag for n, r in second.items()}
    runtime = first["runtime"]
    assert runtime.tag.startswith("localhost/kaito-runtime:0.1.0-")
    assert len(runtime.tag.rsplit("-", 1)[1]) == 12
    assert runtime.version_tag == "localhost/kaito-runtime:0.1.0"
    assert runtime.base is not None and runtime.base.startswith("localhost/kaito-base:bookworm-")


def test_a_presets_source_change_rebuilds_the_images_that_install_it_only(tree: Path) -> None:
    before = tags(tree)
    (tree / "presets" / "kaito_presets" / "runtime.py").write_text("CHANGED = 1\n")
    after = tags(tree)
    assert after["runtime"].tag != before["runtime"].tag
    assert after["controller"].tag != before["controller"].tag
    assert after["curl"].tag == before["curl"].tag
    # The base, and the dependency layer, are untouched: only the thin top layer is rebuilt.
    assert after["runtime"].base == before["runtime"].base
    assert after["runtime"].deps_key == before["runtime"].deps_key


def test_a_controller_source_change_leaves_the_runtime_alone(tree: Path) -> None:
    before = tags(tree)
    (tree / "kaito_core" / "__init__.py").write_text("NAME = 'changed'\n")
    after = tags(tree)
    assert after["controller"].tag != before["controller"].tag
    assert after["runtime"].tag == before["runtime"].tag


def test_caches_and_bytecode_do_not_count(tree: Path) -> None:
    before = tags(tree)
    cache = tree / "presets" / "kaito_presets" / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    (tree / "presets" / "kaito_presets" / "y.pyc").write_bytes(b"\0")
    assert tags(tree)["runtime"].tag == before["runtime"].tag


def test_a_dependency_change_changes_the_dependency_layer_key(tree: Path) -> None:
    before = tags(tree)
    pyproject = tree / "presets" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"trl>=0.20"', '"trl>=0.21"'))
    after = tags(tree)
    assert after["runtime"].deps_key != before["runtime"].deps_key
    assert after["runtime"].tag != before["runtime"].tag
    assert after["runtime"].base == before["runtime"].base
    # trl is a tuning dependency: the controller's dependency layer does not have it.
    assert after["controller"].deps_key == before["controller"].deps_key


def test_requirements_are_third_party_only(tree: Path) -> None:
    runtime = requirements(IMAGES["runtime"], tree)
    controller = requirements(IMAGES["controller"], tree)
    names = {image_plan._requirement_name(item) for item in runtime + controller}
    assert not {name for name in names if name.startswith("kaito")}
    assert "torch>=2.3" in runtime and "trl>=0.20" in runtime and "fastapi>=0.110" in runtime
    assert not any(item.startswith("torch") for item in controller)
    assert "kubernetes-asyncio>=32" in controller and "azure-identity>=1.17" in controller
    assert len(runtime) == len(set(runtime))
    assert not any(item.startswith("vllm") for item in requirements(IMAGES["runtime-vllm"], tree))


def test_the_base_tag_covers_the_package_list() -> None:
    base = image_plan.rootfs_tag(image_plan.BASE)
    assert base == image_plan.rootfs_tag(image_plan.Rootfs("kaito-base", image_plan.BASE.packages))
    assert base != image_plan.rootfs_tag(image_plan.Rootfs("kaito-base", (*image_plan.BASE.packages, "git")))


def test_missing_tools_name_their_apt_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda _name: None)
    with pytest.raises(images.ToolMissingError, match="apt-get install mmdebstrap"):
        images.check_tools(("mmdebstrap",))


def test_a_missing_vllm_base_is_reported_not_pulled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images, "check_tools", lambda *_: None)
    monkeypatch.setattr(images, "local_tags", dict)
    monkeypatch.setenv("KAITO_IMAGE_CACHE", str(tmp_path))
    called: list[object] = []
    monkeypatch.setattr(images, "build_image", lambda *args: called.append(args))
    refs = images.ensure_images(["runtime-vllm"], archives=False, progress=lambda _: None)
    assert refs["runtime-vllm"].skipped == f"skipped: base image {IMAGES['runtime-vllm'].external_base} not available"
    assert not called
