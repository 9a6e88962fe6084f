"""Pure pieces of the AKS provisioner: naming, settings, the Machine adapter, the pool body, error mapping."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format, ServiceRequestError
from hypothesis import given
from hypothesis import strategies as st
from kaito_provisioner_aks import POOL_NAME_RE, AKSProvisioner, AKSSettings, map_arm_error, pool_name
from kaito_provisioner_aks.clients import NoBlindReplayRetryPolicy, never_sent
from kaito_provisioner_aks.errors import is_operation_in_progress
from kaito_provisioner_aks.machine import parse_quantity_gib, view_machine
from pydantic import ValidationError

from kaito_core.api import Machine
from kaito_core.provisioning import (
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    NodeRef,
    ProvisionerError,
    QuotaExceededError,
    RetryableError,
    available_provisioners,
    load_provisioner,
)

SETTINGS = {"arm_subscription_id": "sub", "arm_resource_group": "rg", "azure_cluster_name": "aks",
            "location": "westus2"}


def _machine(**spec: object) -> dict[str, object]:
    return {"metadata": {"name": "ws-x-0", "labels": {"kaito.sh/workspace": "x",
                                                       "kaito.sh/workspacenamespace": "ns",
                                                       "kubernetes.io/hostname": "nope"},
                         "annotations": {}},
            "spec": {"instanceType": "Standard_NC6s_v3", **spec}}


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=253))
def test_pool_names_are_valid_and_deterministic(name: str) -> None:
    pool = pool_name(name)
    assert POOL_NAME_RE.match(pool), pool
    assert len(pool) == 12
    assert pool_name(name) == pool


def test_pool_names_do_not_collide_and_read_like_their_machine() -> None:
    names = [f"workspace-{i}-{j}" for i in range(200) for j in range(25)]
    assert len({pool_name(n) for n in names}) == len(names)
    assert pool_name("phi-3-mini-0").startswith("phi3")
    assert pool_name("0-only-digits")[0].isalpha()
    assert pool_name("123")[0] == "k"


def test_missing_settings_name_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "LOCATION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_CLUSTER_NAME", "aks")
    with pytest.raises(ValidationError) as info:
        AKSSettings()
    text = str(info.value)
    assert "ARM_SUBSCRIPTION_ID" in text and "ARM_RESOURCE_GROUP" in text and "LOCATION" in text
    assert "AZURE_CLUSTER_NAME" not in text


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_SUBSCRIPTION_ID", "sub-1")
    monkeypatch.setenv("ARM_RESOURCE_GROUP", "rg-1")
    monkeypatch.setenv("AZURE_CLUSTER_NAME", "aks-1")
    monkeypatch.setenv("LOCATION", "eastus")
    monkeypatch.setenv("AKS_ZONES", "1, 3")
    monkeypatch.setenv("ARM_CREDENTIAL", "managed-identity")
    settings = AKSSettings()
    assert (settings.arm_subscription_id, settings.location, settings.aks_zones) == ("sub-1", "eastus", ["1", "3"])
    assert settings.arm_credential == "managed-identity"
    assert settings.cluster_resource_id.endswith("/resourceGroups/rg-1/providers/Microsoft.ContainerService/"
                                                 "managedClusters/aks-1")


def test_the_plugin_is_found_through_its_entry_point() -> None:
    assert "aks" in available_provisioners()
    provisioner = load_provisioner("aks", SETTINGS)
    assert isinstance(provisioner, AKSProvisioner)
    with pytest.raises(ValueError, match="ARM_SUBSCRIPTION_ID"):
        load_provisioner("aks", {"location": "westus2"})


def test_machine_view_reads_the_model_and_the_dict_alike() -> None:
    data = _machine(startupTaints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                    resources={"requests": {"storage": "200Gi"}}, nodeLabels={"a": "b"})
    from_dict = view_machine(data)
    from_model = view_machine(Machine.model_validate(data))
    assert from_dict == from_model
    assert from_model.instance_types() == ["Standard_NC6s_v3"]
    assert from_model.requests["storage"] == "200Gi"
    assert view_machine(NodeRef(provider_id="x", machine_name="ws-x-0")).name == "ws-x-0"


def test_pool_body_carries_labels_taints_os_and_disk() -> None:
    provisioner = AKSProvisioner(AKSSettings.model_validate(SETTINGS))
    data = _machine(taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                    startupTaints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}])
    body = provisioner.pool_body(view_machine(data), "Standard_NC6s_v3", now=0).as_dict()
    props = body["properties"]
    assert props["count"] == 1 and props["vmSize"] == "Standard_NC6s_v3"
    assert props["type"] == "VirtualMachineScaleSets" and props["osType"] == "Linux" and props["mode"] == "User"
    assert props["osSKU"] == "Ubuntu" and props["osDiskSizeGB"] == 128
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule", "nvidia.com/gpu:NoSchedule"]
    labels = props["nodeLabels"]
    assert labels["kaito.sh/workspace"] == "x" and labels["kaito.sh/workspacenamespace"] == "ns"
    assert labels["kaito.sh/machine-type"] == "gpu" and labels["kaito.sh/machine"] == "ws-x-0"
    assert labels["kaito.sh/creation-timestamp"] == "1970-01-01T00-00-00Z"
    assert "kubernetes.io/hostname" not in labels  # reserved for the kubelet; AKS refuses it

    data["metadata"]["annotations"] = {"kaito.sh/node-image-family": "AzureLinux"}  # type: ignore[index]
    data["spec"]["resources"] = {"requests": {"storage": "1Ti"}}  # type: ignore[index]
    props = provisioner.pool_body(view_machine(data), "Standard_NC6s_v3").as_dict()["properties"]
    assert props["osSKU"] == "AzureLinux" and props["osDiskSizeGB"] == 1024
    data["metadata"]["annotations"] = {"kaito.sh/node-image-family": "windows"}  # type: ignore[index]
    with pytest.raises(ProvisionerError, match="ubuntu or azurelinux"):
        provisioner.pool_body(view_machine(data), "Standard_NC6s_v3")


@pytest.mark.parametrize(("quantity", "gib"), [("128Gi", 128), ("100G", 94), ("1Ti", 1024), ("137438953472", 128),
                                                ("1.5Gi", 2)])
def test_quantities(quantity: str, gib: int) -> None:
    assert parse_quantity_gib(quantity) == gib


class _Response:
    def __init__(self, status: int, headers: dict[str, str]):
        self.status_code = status
        self.headers = headers
        self.reason = ""


def _http_error(status: int, code: str, message: str, retry_after: str | None = None) -> HttpResponseError:
    error = HttpResponseError(message=f"({code}) {message}")
    error.status_code = status
    error.response = _Response(status, {"Retry-After": retry_after} if retry_after else {})  # type: ignore[assignment]
    error.error = ODataV4Format({"error": {"code": code, "message": message}})
    return error


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (400, "SkuNotAvailable", "not available", InstanceTypeUnavailableError),
    (409, "AllocationFailed", "no capacity", InsufficientCapacityError),
    (409, "ZonalAllocationFailed", "no capacity in zone", InsufficientCapacityError),
    (400, "QuotaExceeded", "over quota", QuotaExceededError),
    (409, "OperationNotAllowed", "exceeding approved Cores quota", QuotaExceededError),
    (429, "TooManyRequests", "slow down", RetryableError),
    (503, "ServiceUnavailable", "down", RetryableError),
    (400, "InvalidParameter", "bad", ProvisionerError),
])
def test_arm_codes_map_to_typed_errors(status: int, code: str, message: str, expected: type[Exception]) -> None:
    error = map_arm_error(_http_error(status, code, message), action="creating pool p")
    assert type(error) is expected
    assert code in error.message and error.message.startswith("creating pool p")


def test_retry_after_and_in_progress() -> None:
    error = map_arm_error(_http_error(429, "TooManyRequests", "x", retry_after="17"), action="a")
    assert isinstance(error, RetryableError) and error.retry_after == 17
    assert is_operation_in_progress(_http_error(
        409, "OperationNotAllowed", "Operation is not allowed: another operation (Creating) is in progress"))
    assert not is_operation_in_progress(_http_error(409, "OperationNotAllowed", "quota"))
    assert isinstance(map_arm_error(ServiceRequestError("connection refused"), action="a"), RetryableError)


def test_the_sdk_retries_a_put_only_when_arm_cannot_have_carried_it_out() -> None:
    """A create PUT is retried inside the SDK after a 429 or a connection that never opened; not after a
    broken connection or a 5xx (ARM may have made the pool: the provisioner GETs it instead)."""
    policy = NoBlindReplayRetryPolicy(retry_total=3)
    refused = ServiceRequestError("refused", error=aiohttp.ClientConnectorError(None, OSError(111, "refused")))
    broken = ServiceRequestError("broken", error=aiohttp.ServerDisconnectedError())
    assert never_sent(refused) and not never_sent(broken)

    def request(method: str) -> SimpleNamespace:
        return SimpleNamespace(http_request=SimpleNamespace(method=method, body=None, files=None))

    def answer(method: str, status: int) -> SimpleNamespace:
        return SimpleNamespace(http_request=SimpleNamespace(method=method),
                               http_response=SimpleNamespace(status_code=status, headers={"Retry-After": "1"}))

    assert not policy.increment(policy.configure_retries({}), response=request("PUT"), error=broken)
    assert policy.increment(policy.configure_retries({}), response=request("PUT"), error=refused)
    assert policy.increment(policy.configure_retries({}), response=request("GET"), error=broken)
    settings = policy.configure_retries({})
    assert policy.is_retry(settings, answer("PUT", 429))
    assert not policy.is_retry(settings, answer("PUT", 500)) and not policy.is_retry(settings, answer("PUT", 503))
    assert policy.is_retry(settings, answer("GET", 500)) and policy.is_retry(settings, answer("DELETE", 503))
