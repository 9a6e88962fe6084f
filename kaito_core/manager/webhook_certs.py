"""The admission webhook's certificate: a long-lived CA and a rotated serving certificate, in a Secret.

Every replica serves the webhook (the apiserver may call any of them). The Secret is the source of
truth and holds a CA (``ca.crt``, ``ca.key``: ten years), the serving ("leaf") certificate it signed
(``tls.crt``, ``tls.key``: 90 days) and ``ca-bundle.crt``, the CAs to trust (the current one, plus
an earlier one until it expires). The ValidatingWebhookConfiguration's ``caBundle`` is that bundle,
so it changes only when the CA does, not when the leaf is re-issued.

* The first replica to find the Secret missing, for other DNS names, or its leaf due (30 days
  before expiry) issues a new leaf from the CA and writes it (a compare-and-swap: of two replicas
  one wins, the other reads the winner's). Old and new leaf are signed by the same CA, so the
  apiserver trusts both while the replicas switch over.
* The CA itself is replaced a year before it expires (or when a Secret of the old one-certificate
  format has no ``ca.key``); the bundle then holds the new and the old CA, so leaves of either are
  trusted until the old CA expires.
* Every replica watches the Secret: a leaf written by any replica is on every replica's files and
  served (:meth:`WebhookServer.reload_certificates`) within moments, not at its next hourly check.

With cert-manager the chart mounts its Secret instead and none of this runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaito_core.engine import AlreadyExistsError, Client, ConflictError, Informer, NotFoundError, ResourceKind
from kaito_core.engine.informer import FuncHandler
from kaito_core.engine.resources import SECRET
from kaito_core.engine.tls import key_pem, make_ca, sign_certificate

__all__ = ["VALIDATING_WEBHOOK_CONFIGURATION", "WebhookCertManager", "WebhookEndpoint"]

log = structlog.get_logger("kaito_core.manager.webhook")

VALIDATING_WEBHOOK_CONFIGURATION = ResourceKind(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
    namespaced=False,
)

_PEM = serialization.Encoding.PEM
#: The files written to ``cert_dir`` (``ca.crt`` there is the bundle: what a client should trust).
_FILES = ("tls.crt", "tls.key", "ca.crt")


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


class WebhookCertManager:
    """Keeps ``cert_dir/tls.crt``, ``tls.key``, ``ca.crt`` (the trust bundle) current and the caBundle in place.

    ``validity``/``renew_before`` are the serving certificate's (90 days, re-issued 30 days before
    it expires); ``ca_validity``/``ca_renew_before`` the CA's (ten years, replaced a year before).
    """

    def __init__(self, client: Client, *, secret_name: str, namespace: str, cert_dir: Path,
                 endpoint: WebhookEndpoint, configuration_name: str | None,
                 validity: datetime.timedelta = datetime.timedelta(days=90),
                 renew_before: datetime.timedelta = datetime.timedelta(days=30),
                 ca_validity: datetime.timedelta = datetime.timedelta(days=3650),
                 ca_renew_before: datetime.timedelta = datetime.timedelta(days=365)):
        self.client = client
        self.secret_name = secret_name
        self.namespace = namespace
        self.cert_dir = cert_dir
        self.endpoint = endpoint
        self.configuration_name = configuration_name
        self.validity = validity
        self.renew_before = renew_before
        self.ca_validity = ca_validity
        self.ca_renew_before = ca_renew_before
        self.rotations = 0
        """Secrets this replica wrote (a first issue, a leaf re-issued, a CA replaced)."""

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    @property
    def ca_file(self) -> Path:
        """The CA bundle a client of this webhook should trust (what the caBundle holds)."""
        return self.cert_dir / "ca.crt"

    # -- deciding

    def _usable_ca(self, data: dict[str, str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        """The Secret's CA and key, if both are there, belong together and are not due for replacement."""
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
            key = serialization.load_pem_private_key(base64.b64decode(data["ca.key"]), password=None)
        except (KeyError, ValueError, TypeError):
            return None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            return None
        if cert.not_valid_after_utc - _now() <= self.ca_renew_before:
            return None
        return cert, key

    def _usable_leaf(self, data: dict[str, str], ca: x509.Certificate) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
            serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
            cert.verify_directly_issued_by(ca)
        except (KeyError, ValueError, TypeError, InvalidSignature):
            return False
        try:
            names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                        .get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = set()
        remaining = cert.not_valid_after_utc - _now()
        return remaining > self.renew_before and set(self.endpoint.dns_names()) <= names

    def _issue_leaf(self, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
        validity = min(self.validity, ca.not_valid_after_utc - _now())
        cert, key = sign_certificate(
            ca, ca_key, self.endpoint.dns_names()[0], dns_names=self.endpoint.dns_names(),
            ip_addresses=self.endpoint.ip_addresses(), server=True, validity=validity,
        )
        return {"tls.crt": _b64(cert.public_bytes(_PEM)), "tls.key": _b64(key_pem(key))}

    def _next(self, data: dict[str, str]) -> tuple[dict[str, str], str] | None:
        """What the Secret should hold instead of ``data`` and why; None when ``data`` is good as it is."""
        ca = self._usable_ca(data)
        if ca is not None:
            if self._usable_leaf(data, ca[0]):
                return None
            return {**data, **self._issue_leaf(*ca)}, "serving certificate issued"
        # A new CA; the ones trusted so far stay in the bundle until they expire, so a replica still
        # serving a leaf of the old CA is trusted while it switches over.
        ca_cert, ca_key = make_ca("kaito-core-webhook-ca", validity=self.ca_validity)
        earlier = _certificates(base64.b64decode(data.get("ca-bundle.crt") or data.get("ca.crt") or ""))
        keep = [c for c in earlier if c.not_valid_after_utc > _now() and c != ca_cert]
        bundle = b"".join(c.public_bytes(_PEM) for c in [ca_cert, *keep])
        fresh = {"ca.crt": _b64(ca_cert.public_bytes(_PEM)), "ca.key": _b64(key_pem(ca_key)),
                 "ca-bundle.crt": _b64(bundle), **self._issue_leaf(ca_cert, ca_key)}
        return fresh, "webhook CA issued" if not earlier else "webhook CA replaced"

    # -- the Secret

    async def _secret_data(self) -> dict[str, str]:
        """Read the Secret, renewing what is due; returns the data every replica agrees on."""
        for _ in range(5):
            secret = await self.client.get_or_none(SECRET, self.secret_name, self.namespace)
            data: dict[str, str] = dict((secret or {}).get("data") or {})
            plan = self._next(data)
            if plan is None:
                return data
            fresh, what = plan
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
            except (AlreadyExistsError, ConflictError):
                continue  # another replica wrote it first: read theirs
            self.rotations += 1
            log.info(what, secret=self.secret_name, namespace=self.namespace,
                     dns_names=list(self.endpoint.dns_names()))
            return fresh
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
        log.info("webhook caBundle updated", configuration=self.configuration_name)

    async def ensure(self, *, patch_ca_bundle: bool = True) -> bool:
        """Make the files (and, unless told not to, the caBundle) current; True when the files changed."""
        data = await self._secret_data()
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        bundle = data.get("ca-bundle.crt") or data["ca.crt"]
        wanted = {"tls.crt": data["tls.crt"], "tls.key": data["tls.key"], "ca.crt": bundle}
        changed = False
        # The key before the certificate is harmless: the server loads both only on reload.
        for name in ("tls.key", "tls.crt", "ca.crt"):
            content = base64.b64decode(wanted[name])
            path = self.cert_dir / name
            if not path.exists() or path.read_bytes() != content:
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_bytes(content)
                tmp.chmod(0o600)
                tmp.replace(path)
                changed = True
        if patch_ca_bundle:
            await self._patch_ca_bundle(bundle)
        return changed

    async def run(self, on_change: Any, interval: float = 3600.0) -> None:
        """Watch the Secret and check every ``interval`` seconds; call ``on_change()`` when the files changed.

        A leaf re-issued by any replica reaches this one's files through the watch within moments;
        the periodic check is what notices a leaf (or CA) coming due, or a Secret deleted."""
        poke = asyncio.Event()
        informer = Informer(self.client, SECRET, namespace=self.namespace,
                            field_selector=f"metadata.name={self.secret_name}")
        informer.add_handler(FuncHandler(on_add=lambda _obj: poke.set(),
                                         on_update=lambda _old, _new: poke.set(),
                                         on_delete=lambda _obj, _unknown: poke.set()))
        informer.start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poke.wait(), timeout=interval)
                poke.clear()
                try:
                    if await self.ensure():
                        log.info("webhook certificate files changed; serving the new certificate",
                                 secret=self.secret_name)
                        on_change()
                except Exception:
                    log.exception("webhook certificate check failed; will retry")
                    await asyncio.sleep(min(interval, 10.0))
                    poke.set()
        finally:
            await informer.stop()
