"""Certificates for a local control plane, made the way envtest makes them.

One self-signed CA signs the apiserver's serving certificate and an admin client
certificate (``CN=admin, O=system:masters``: RBAC lets that group do anything).
A separate RSA key signs service-account tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kaito_core.engine.tls import key_pem, make_ca, sign_certificate

__all__ = ["CertificateSet", "load_ca", "make_ca", "make_certificates", "sign_certificate"]


@dataclass(frozen=True)
class CertificateSet:
    """Paths of every PEM file a control plane needs."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key_pem(key))
    path.chmod(0o600)


def make_certificates(folder: Path, service_ip: str = "10.0.0.1") -> CertificateSet:
    """Write a CA, apiserver serving cert, admin client cert and SA keys into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca()
    serving, serving_key = sign_certificate(
        ca_cert,
        ca_key,
        "kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", service_ip),
        server=True,
    )
    admin, admin_key = sign_certificate(ca_cert, ca_key, "admin", organization="system:masters")
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = CertificateSet(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        admin_cert=folder / "admin.crt",
        admin_key=folder / "admin.key",
        sa_public=folder / "sa.pub",
        sa_private=folder / "sa.key",
    )
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.ca_key, ca_key)
    paths.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.serving_key, serving_key)
    paths.admin_cert.write_bytes(admin.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.admin_key, admin_key)
    _write_key(paths.sa_private, sa_key)
    paths.sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return paths


def load_ca(paths: CertificateSet) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read the CA back, to sign more leaf certificates (webhooks, fake servers)."""
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the CA key is not an EC key")
    return cert, key
