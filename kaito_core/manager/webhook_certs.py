"""The admission webhook's certificate: self-signed, shared through a Secret, rotated.

Every replica serves the webhook (the apiserver may call any of them), so all
must present the same certificate. The Secret is the source of truth: the first
replica to find it missing (or expiring, or for other DNS names) makes a new CA
and serving certificate and writes it; a replica that loses that race reads the
winner's. Each replica writes the files its HTTPS server loads, and patches the
CA into the ValidatingWebhookConfiguration's ``caBundle``. With cert-manager the
chart mounts its Secret instead and none of this runs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kaito_core.engine import AlreadyExistsError, Client, ConflictError, NotFoundError, ResourceKind
from kaito_core.engine.resources import SECRET
from kaito_core.engine.tls import key_pem, make_ca, sign_certificate

__all__ = ["VALIDATING_WEBHOOK_CONFIGURATION", "WebhookCertManager", "WebhookEndpoint"]

log = structlog.get_logger("kaito_core.manager.webhook")

VALIDATING_WEBHOOK_CONFIGURATION = ResourceKind(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
    namespaced=False,
)


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the apiserver reaches the webhook: a Service (in cluster) or a host (local runs)."""

    service: str | None = None
    namespace: str = "kaito-system"
    host: str | None = None

    def dns_names(self) -> tuple[str, ...]:
        if self.service:
            base = f"{self.service}.{self.namespace}"
            return (self.service, base, f"{base}.svc", f"{base}.svc.cluster.local")
        return ("localhost",)

    def ip_addresses(self) -> tuple[str, ...]:
        return (self.host,) if self.host and self.host[0].isdigit() else ()


class WebhookCertManager:
    """Keeps ``cert_dir/tls.crt``, ``tls.key``, ``ca.crt`` valid and the caBundle in place."""

    def __init__(self, client: Client, *, secret_name: str, namespace: str, cert_dir: Path,
                 endpoint: WebhookEndpoint, configuration_name: str | None,
                 validity: datetime.timedelta = datetime.timedelta(days=365),
                 renew_before: datetime.timedelta = datetime.timedelta(days=30)):
        self.client = client
        self.secret_name = secret_name
        self.namespace = namespace
        self.cert_dir = cert_dir
        self.endpoint = endpoint
        self.configuration_name = configuration_name
        self.validity = validity
        self.renew_before = renew_before

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    def _usable(self, data: dict[str, str]) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
            base64.b64decode(data["tls.key"])
            base64.b64decode(data["ca.crt"])
        except (KeyError, ValueError):
            return False
        remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        try:
            names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                        .get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = set()
        return remaining > self.renew_before and set(self.endpoint.dns_names()) <= names

    def _generate(self) -> dict[str, str]:
        ca_cert, ca_key = make_ca("kaito-core-webhook-ca", validity=self.validity)
        cert, key = sign_certificate(
            ca_cert, ca_key, self.endpoint.dns_names()[0], dns_names=self.endpoint.dns_names(),
            ip_addresses=self.endpoint.ip_addresses(), server=True, validity=self.validity,
        )
        pem = serialization.Encoding.PEM
        return {
            "tls.crt": base64.b64encode(cert.public_bytes(pem)).decode(),
            "tls.key": base64.b64encode(key_pem(key)).decode(),
            "ca.crt": base64.b64encode(ca_cert.public_bytes(pem)).decode(),
        }

    async def _secret_data(self) -> dict[str, str]:
        """Read the Secret, replacing it when unusable; returns the data every replica agrees on."""
        for _ in range(5):
            secret = await self.client.get_or_none(SECRET, self.secret_name, self.namespace)
            if secret is not None and self._usable(secret.get("data") or {}):
                data: dict[str, str] = secret["data"]
                return data
            fresh = self._generate()
            try:
                if secret is None:
                    await self.client.create({
                        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                        "metadata": {"name": self.secret_name, "namespace": self.namespace,
                                     "labels": {"app.kubernetes.io/managed-by": "kaito-core"}},
                        "data": fresh,
                    }, kind=SECRET)
                else:
                    # resourceVersion makes this a compare-and-swap: two replicas never both win.
                    await self.client.update({**secret, "data": fresh}, kind=SECRET)
                log.info("webhook certificate issued", secret=self.secret_name, namespace=self.namespace,
                         dns_names=list(self.endpoint.dns_names()))
                return fresh
            except (AlreadyExistsError, ConflictError):
                continue  # another replica wrote it first: read theirs
        raise RuntimeError(f"could not settle the webhook certificate Secret {self.namespace}/{self.secret_name}")

    async def _patch_ca_bundle(self, ca_b64: str) -> None:
        if not self.configuration_name:
            return
        try:
            config: dict[str, Any] = await self.client.get(VALIDATING_WEBHOOK_CONFIGURATION, self.configuration_name)
        except NotFoundError:
            log.warning("webhook configuration not found; admission is not enforced",
                        configuration=self.configuration_name)
            return
        webhooks = config.get("webhooks") or []
        if all((hook.get("clientConfig") or {}).get("caBundle") == ca_b64 for hook in webhooks):
            return
        for hook in webhooks:
            hook.setdefault("clientConfig", {})["caBundle"] = ca_b64
        try:
            await self.client.update(config, kind=VALIDATING_WEBHOOK_CONFIGURATION)
        except ConflictError:
            return  # someone else changed it; the next ensure() looks again

    async def ensure(self, *, patch_ca_bundle: bool = True) -> bool:
        """Make the files (and, unless told not to, the caBundle) current; True when the files changed."""
        data = await self._secret_data()
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        wanted = {name: base64.b64decode(value) for name, value in data.items()}
        changed = False
        for name, content in wanted.items():
            path = self.cert_dir / name
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)
                path.chmod(0o600)
                changed = True
        if patch_ca_bundle:
            await self._patch_ca_bundle(data["ca.crt"])
        return changed

    async def run(self, on_change: Any, interval: float = 3600.0) -> None:
        """Check every ``interval`` seconds; call ``on_change()`` when the files were replaced."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.ensure():
                    on_change()
            except Exception:
                log.exception("webhook certificate check failed; will retry")
