"""`kaito validate` and `kaito presets`: offline, same validator and messages as admission."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kaito_core.cli import main
from kaito_core.cli.offline import validate_files

EXAMPLES = Path(__file__).parents[2] / "examples"

BAD = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata: {name: too-small}
resource: {instanceType: Standard_NC4as_T4_v3, labelSelector: {matchLabels: {a: b}}}
inference: {preset: {name: phi-3-medium-4k-instruct}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"""


def test_seed_examples_are_valid() -> None:
    out = io.StringIO()
    assert validate_files(sorted(str(p) for p in EXAMPLES.glob("*.yaml")), out) == 0
    assert out.getvalue().count(": valid") == 3


def test_invalid_workspace_names_the_field_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    out = io.StringIO()
    assert validate_files([str(path)], out) == 1
    assert ("workspace/too-small: resource.instanceType: Standard_NC4as_T4_v3 has 16Gi GPU memory; "
            "phi-3-medium-4k-instruct needs 28Gi; try Standard_NC24ads_A100_v4") in out.getvalue()


def test_file_without_workspaces_fails(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = io.StringIO()
    assert validate_files([str(path)], out) == 1
    assert "no Workspace documents found" in out.getvalue()


def test_presets_lists_models_with_smallest_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    phi = next(line for line in lines if line.startswith("phi-3-mini-4k-instruct "))
    assert "Standard_NC4as_T4_v3" in phi


def test_presets_detail_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "phi-3-mini-128k-instruct"]) == 0
    detail = capsys.readouterr().out
    assert "tuning qlora" in detail and "Standard_NC6s_v3" in detail
    assert main(["presets", "phi-3-mini"]) == 1
    assert "phi-3-mini-4k-instruct" in capsys.readouterr().err  # close matches are suggested


def test_api_reference_is_current() -> None:
    from kaito_core.api.docs import render_reference

    page = Path(__file__).parents[2] / "docs" / "reference" / "api.md"
    assert page.read_text() == render_reference(), "run: python -m kaito_core.api.docs docs/reference/api.md"
    assert "`resource.instanceType`" in page.read_text() and "`spec.instanceType`" in page.read_text()


def test_controller_flags_read_provisioner_settings_as_json() -> None:
    from kaito_core.cli import build_parser
    from kaito_core.cli.controller import settings_from_args

    args = build_parser().parse_args([
        "controller", "--provisioner", "simulated", "--provisioner-setting", 'quota_exceeded=["Standard_NC6s_v3"]',
        "--provisioner-setting", "launch_delay=0", "--provisioner-setting", "node_name_prefix=sim-",
        "--leader-elect", "true", "--no-webhook"])
    settings = settings_from_args(args)
    assert settings.provisioner_settings == {"quota_exceeded": ["Standard_NC6s_v3"], "launch_delay": 0,
                                             "node_name_prefix": "sim-"}
    assert settings.manager.leader_election.enabled is True and settings.webhook.enabled is False
