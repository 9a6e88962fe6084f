"""The inference server's bearer token: from the user's Secret, none on purpose, or, for a public
LoadBalancer that named none, a Secret the operator makes (a public endpoint never starts open)."""

from __future__ import annotations

from typing import Any

import pytest
from kaito_presets.runtime.inference.config import API_KEY_ENV
from test_workspace_manifests import ctx_for, workspace

from kaito_core.controllers.workspace import runtime as rt
from kaito_core.controllers.workspace.auth import generated_api_key_secret
from kaito_core.controllers.workspace.inference import inference_service, inference_workload


def _ws(annotations: dict[str, str]) -> Any:
    return workspace(metadata={"name": "w", "namespace": "ns", "uid": "u", "annotations": annotations})


def _key_env(ws: Any) -> list[dict[str, Any]]:
    pod = inference_workload(ctx_for(ws), config_data={})["spec"]["template"]["spec"]
    return [e for c in pod["containers"] for e in c.get("env", []) if e["name"] == rt.API_KEY_ENV]


def test_the_env_name_is_the_one_the_server_reads() -> None:
    assert rt.API_KEY_ENV == API_KEY_ENV


@pytest.mark.parametrize(("annotations", "secret"), [
    ({}, None),  # ClusterIP, nothing asked: in-cluster only, as in Kaito
    ({"kaito.sh/enablelb": "True"}, "w-api-key"),  # public: on by default, the operator's Secret
    ({"kaito.sh/enablelb": "true", "kaito.sh/api-key-secret": "mine"}, "mine"),
    ({"kaito.sh/api-key-secret": "mine"}, "mine"),  # asked for without a load balancer
    ({"kaito.sh/enablelb": "True", "kaito.sh/api-key-secret": "none"}, None),  # open, on purpose
])
def test_which_secret_the_server_reads(annotations: dict[str, str], secret: str | None) -> None:
    env = _key_env(_ws(annotations))
    if secret is None:
        assert env == []
    else:
        assert env == [{"name": "KAITO_API_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-key"}}}]


def test_the_operator_makes_a_secret_only_for_a_load_balancer_that_named_none() -> None:
    made = generated_api_key_secret(ctx_for(_ws({"kaito.sh/enablelb": "True"})))
    assert made is not None
    assert made["metadata"]["name"] == "w-api-key" and made["metadata"]["namespace"] == "ns"
    assert made["metadata"]["ownerReferences"][0]["uid"] == "u"  # deleted with the Workspace
    token = made["stringData"]["api-key"]
    assert len(token) == 64 and int(token, 16) >= 0
    again = generated_api_key_secret(ctx_for(_ws({"kaito.sh/enablelb": "True"})))
    assert again is not None and again["stringData"]["api-key"] != token  # random: so it is created once only
    for asked in ({}, {"kaito.sh/enablelb": "True", "kaito.sh/api-key-secret": "mine"},
                        {"kaito.sh/enablelb": "True", "kaito.sh/api-key-secret": "none"}):
        assert generated_api_key_secret(ctx_for(_ws(asked))) is None
    assert inference_service(ctx_for(_ws({"kaito.sh/enablelb": "True"})))["spec"]["type"] == "LoadBalancer"


@pytest.mark.parametrize("value", ["My_Secret", "-x", "a" * 254, ""])
def test_a_bad_secret_name_is_refused_naming_the_annotation(value: str) -> None:
    from kaito_core.api.validation import validate_workspace

    problems = validate_workspace(_ws({"kaito.sh/api-key-secret": value}))
    assert [p.path for p in problems] == ["metadata.annotations[kaito.sh/api-key-secret]"], problems
    assert "not a Secret name" in problems[0].message and "none" in problems[0].message


@pytest.mark.parametrize("value", ["mine", "none", "None", "team.token-1"])
def test_good_values_pass(value: str) -> None:
    from kaito_core.api.validation import validate_workspace

    assert validate_workspace(_ws({"kaito.sh/api-key-secret": value})) == []
