"""The admission webhook: AdmissionReview in, verdict out; served over TLS; registration object."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from kaito_core.api import WEBHOOK_NAME, WebhookServer, admission_review, validating_webhook_configuration
from kaito_core.testing.certs import make_ca, sign_certificate

EXAMPLE = yaml.safe_load((Path(__file__).parents[2] / "examples" / "kaito_workspace_phi_3.yaml").read_text())


def review(obj: Any, *, operation: str = "CREATE", old: Any = None, kind: str = "Workspace") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "1234", "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": kind},
        "operation": operation, "namespace": "ns", "object": obj, "oldObject": old}}


def bad_instance() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    doc["resource"]["instanceType"] = "Standard_NC4as_T4_v3"
    doc["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    return doc


def test_valid_workspace_is_allowed() -> None:
    answer = admission_review(review(EXAMPLE))
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"] == {"uid": "1234", "allowed": True}


def test_invalid_workspace_is_denied_with_the_validator_message() -> None:
    response = admission_review(review(bad_instance()))["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "resource.instanceType: Standard_NC4as_T4_v3 has 16Gi GPU memory; phi-3-medium-4k-instruct needs 28Gi; "
        "try Standard_NC24ads_A100_v4")


def test_update_checks_immutable_fields_against_old_object() -> None:
    new = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    new["resource"]["instanceType"] = "Standard_NC12s_v3"
    response = admission_review(review(new, operation="UPDATE", old=EXAMPLE))["response"]
    assert response["allowed"] is False and "resource.instanceType: this field is immutable" in (
        response["status"]["message"])


def test_what_is_never_blocked() -> None:
    bad = bad_instance()
    assert admission_review(review(bad, operation="DELETE"))["response"]["allowed"]
    assert admission_review(review(bad, kind="Machine"))["response"]["allowed"]
    deleting = bad | {"metadata": {"name": "w", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert admission_review(review(deleting, operation="UPDATE", old=bad))["response"]["allowed"]
    # a finalizer or label change on an object the catalog no longer likes goes through
    finalized = bad | {"metadata": {"name": "w", "finalizers": ["workspace.finalizer.kaito.sh"]}}
    assert admission_review(review(finalized, operation="UPDATE", old=bad))["response"]["allowed"]


@pytest.mark.parametrize("junk", [None, {}, {"request": {}}, {"request": {"uid": 5}}, []])
def test_not_an_admission_review(junk: Any) -> None:
    with pytest.raises(ValueError, match="not an AdmissionReview"):
        admission_review(junk)


def test_webhook_configuration() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    by_url = validating_webhook_configuration(pem, url="https://127.0.0.1:9443/validate-workspace")
    hook = by_url["webhooks"][0]
    assert by_url["kind"] == "ValidatingWebhookConfiguration" and hook["name"] == WEBHOOK_NAME
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == pem
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-workspace"
    assert (hook["failurePolicy"], hook["sideEffects"], hook["admissionReviewVersions"]) == ("Fail", "None", ["v1"])
    assert hook["rules"] == [{"apiGroups": ["kaito.sh"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                              "resources": ["workspaces"], "scope": "Namespaced"}]
    by_service = validating_webhook_configuration(pem.decode(), service_name="kaito", service_namespace="kaito-system",
                                                  namespace_selector={"matchLabels": {"a": "b"}})
    assert by_service["webhooks"][0]["clientConfig"]["service"] == {
        "name": "kaito", "namespace": "kaito-system", "path": "/validate-workspace", "port": 443}
    assert by_service["webhooks"][0]["namespaceSelector"] == {"matchLabels": {"a": "b"}}
    with pytest.raises(ValueError):
        validating_webhook_configuration(pem)
    with pytest.raises(ValueError):
        validating_webhook_configuration(pem, url="https://x", service_name="y", service_namespace="z")


def write_serving_cert(folder: Path) -> tuple[Path, Path, bytes]:
    ca_cert, ca_key = make_ca()
    cert, key = sign_certificate(ca_cert, ca_key, "kaito-webhook", dns_names=("localhost",),
                                 ip_addresses=("127.0.0.1",), server=True)
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, ca_cert.public_bytes(serialization.Encoding.PEM)


async def test_server_answers_over_tls_and_reloads_its_certificate(tmp_path: Path) -> None:
    cert_file, key_file, ca_pem = write_serving_cert(tmp_path)
    trust = ssl.create_default_context(cadata=ca_pem.decode())
    async with WebhookServer(cert_file, key_file, host="127.0.0.1", port=0) as server, \
            aiohttp.ClientSession() as http:
        assert server.port > 0 and server.url == f"https://127.0.0.1:{server.port}/validate-workspace"
        async with http.post(server.url, json=review(bad_instance()), ssl=trust) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["response"]["allowed"] is False
        assert "needs 28Gi" in body["response"]["status"]["message"]
        async with http.post(server.url, data=b"{not json", ssl=trust) as resp:
            assert resp.status == 400
        # rotate: a certificate from a new CA is served without a restart
        (tmp_path / "new").mkdir()
        new_cert, new_key, new_ca = write_serving_cert(tmp_path / "new")
        cert_file.write_bytes(new_cert.read_bytes())
        key_file.write_bytes(new_key.read_bytes())
        server.reload_certificates()
        async with aiohttp.ClientSession() as fresh, fresh.post(
                server.url, json=review(EXAMPLE), ssl=ssl.create_default_context(cadata=new_ca.decode())) as resp:
            assert (await resp.json())["response"]["allowed"] is True
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with aiohttp.ClientSession() as old_trust:
                await old_trust.post(server.url, json=review(EXAMPLE), ssl=trust)


@pytest.mark.parametrize("depth", [101, 100_000])
async def test_deeply_nested_json_is_a_400_naming_the_limit(tmp_path: Path, depth: int) -> None:
    """JSON nested past the limit is refused before it is parsed (100,000 levels were a 500, RecursionError)."""
    cert_file, key_file, ca_pem = write_serving_cert(tmp_path)
    trust = ssl.create_default_context(cadata=ca_pem.decode())
    deep = "[" * (depth - 3) + "]" * (depth - 3)  # request.object.<field> plus the nesting: depth levels in all
    body = ('{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "1", '
            '"kind": {"group": "kaito.sh", "kind": "Workspace"}, "operation": "CREATE", '
            f'"object": {{"resource": {deep}}}}}}}').encode()
    async with WebhookServer(cert_file, key_file, host="127.0.0.1", port=0) as server, \
            aiohttp.ClientSession() as http:
        async with http.post(server.url, data=body, ssl=trust,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()
            assert "nested deeper than 100 levels" in (await resp.json())["error"]
        # At the limit it is parsed and answered (a denial: resource is not an object).
        ok = body.replace(b"[" * (depth - 3), b"[" * 97, 1).replace(b"]" * (depth - 3), b"]" * 97, 1)
        async with http.post(server.url, data=ok, ssl=trust, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["response"]["allowed"] is False
