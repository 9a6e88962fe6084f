"""The webhook's serving certificate rotates under two replicas without a refused call.

Two :class:`WebhookCertManager` replicas share one Secret on a real apiserver, each with its
own :class:`WebhookServer`. A client that trusts only what the ValidatingWebhookConfiguration's
``caBundle`` says (read afresh before every call, as the apiserver does) calls both servers over
and over while one replica finds the serving certificate due and re-issues it. Every call
succeeds, the caBundle never changes (the CA is long-lived, only the leaf rotates), and the other
replica serves the new leaf within seconds because it watches the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from kaito_core.api import WebhookServer, validating_webhook_configuration
from kaito_core.engine import SECRET, ApiClientTransport, Client
from kaito_core.manager.webhook_certs import VALIDATING_WEBHOOK_CONFIGURATION, WebhookCertManager, WebhookEndpoint
from kaito_core.testing import ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.asyncio]

NS = "kaito-system"
SECRET_NAME = "kaito-core-webhook-cert"
CONFIG = "kaito-core-rotation-test"
EXAMPLE_REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"}, "operation": "CREATE"}}


def _served_serial(port: int, ca_pem: bytes) -> int:
    """The serial number of the certificate the server on ``port`` presents now (a fresh connection)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def _ca_bundle(client: Client) -> bytes:
    config = await client.get(VALIDATING_WEBHOOK_CONFIGURATION, CONFIG)
    return base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])


@pytest.fixture
async def client(light_control_plane: ControlPlane) -> AsyncIterator[Client]:
    api = Client(await ApiClientTransport.from_kubeconfig(light_control_plane.kubeconfig))
    light_control_plane.kubectl("create", "namespace", NS)
    try:
        yield api
    finally:
        await api.close()


def _replica(client: Client, folder: Path, **kwargs: Any) -> WebhookCertManager:
    return WebhookCertManager(client, secret_name=SECRET_NAME, namespace=NS, cert_dir=folder,
                              endpoint=WebhookEndpoint(host="127.0.0.1"), configuration_name=CONFIG, **kwargs)


async def test_leaf_rotation_with_two_replicas_never_refuses_a_call(client: Client, tmp_path: Path) -> None:
    a = _replica(client, tmp_path / "a")
    b = _replica(client, tmp_path / "b")
    await a.ensure(patch_ca_bundle=False)
    first_ca = (tmp_path / "a" / "ca.crt").read_bytes()
    await client.create(validating_webhook_configuration(first_ca, url="https://127.0.0.1:1/validate-workspace",
                                                         name=CONFIG), kind=VALIDATING_WEBHOOK_CONFIGURATION)
    await a.ensure()
    await b.ensure()
    bundle_before = await _ca_bundle(client)
    server_a = WebhookServer(a.cert_file, a.key_file, host="127.0.0.1", port=0)
    server_b = WebhookServer(b.cert_file, b.key_file, host="127.0.0.1", port=0)
    await server_a.start()
    await server_b.start()
    # Both replicas keep their files current in the background (as Operator._serve_webhook runs them).
    runs = [asyncio.create_task(a.run(on_change=server_a.reload_certificates)),
            asyncio.create_task(b.run(on_change=server_b.reload_certificates))]
    calls: list[tuple[str, str]] = []
    stop = asyncio.Event()

    async def caller() -> None:
        """The apiserver's view: trust exactly the current caBundle, call each replica in turn."""
        while not stop.is_set():
            for server in (server_a, server_b):
                trust = ssl.create_default_context(cadata=(await _ca_bundle(client)).decode())
                try:
                    async with aiohttp.ClientSession() as http, http.post(
                            server.url, json=EXAMPLE_REVIEW, ssl=trust, timeout=aiohttp.ClientTimeout(total=5)
                    ) as resp:
                        calls.append((server.url, "ok" if resp.status == 200 else f"HTTP {resp.status}"))
                except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
                    calls.append((server.url, f"{type(exc).__name__}: {exc}"))
            await asyncio.sleep(0.1)

    calling = asyncio.create_task(caller())
    try:
        await asyncio.sleep(1.0)
        served_before = await asyncio.to_thread(_served_serial, server_b.port, bundle_before)
        # Replica A finds the leaf due (as it would 30 days before expiry) and re-issues it.
        due = _replica(client, tmp_path / "a", renew_before=datetime.timedelta(days=400))
        assert await due.ensure(), "the due replica did not re-issue the certificate"
        server_a.reload_certificates()
        secret = await client.get(SECRET, SECRET_NAME, NS)
        new_serial = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"])).serial_number
        assert new_serial != served_before
        # Replica B serves the new leaf within seconds (it watches the Secret; no hourly re-read).
        started = time.monotonic()
        while await asyncio.to_thread(_served_serial, server_b.port, await _ca_bundle(client)) != new_serial:
            assert time.monotonic() - started < 10, "replica B still serves the old certificate after 10 s"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await calling
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await server_a.stop()
        await server_b.stop()
    refused = [c for c in calls if c[1] != "ok"]
    assert len(calls) > 10 and not refused, f"{len(refused)} of {len(calls)} calls refused: {refused[:5]}"
    assert await _ca_bundle(client) == bundle_before, "the caBundle changed: only the leaf should rotate"
