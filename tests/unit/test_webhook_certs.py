"""The webhook certificate's renewal rules (the Secret's next contents), without an apiserver.

A long-lived CA signs a short-lived serving certificate; re-issuing the leaf keeps the CA and the
trust bundle (so the caBundle does not change); replacing the CA keeps the old CA in the bundle so
a leaf it signed is still trusted while replicas switch over.
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from kaito_core.engine import Client
from kaito_core.manager.webhook_certs import WebhookCertManager, WebhookEndpoint

DAY = datetime.timedelta(days=1)


def manager(tmp_path: Path, **kwargs: Any) -> WebhookCertManager:
    return WebhookCertManager(cast(Client, None), secret_name="s", namespace="ns", cert_dir=tmp_path,
                              endpoint=WebhookEndpoint(service="kaito-webhook"), configuration_name=None, **kwargs)


def certs(data: dict[str, str], key: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(data[key]))


def trusted_by_bundle(data: dict[str, str], leaf_data: dict[str, str]) -> bool:
    leaf = certs(leaf_data, "tls.crt")[0]
    for ca in certs(data, "ca-bundle.crt"):
        try:
            leaf.verify_directly_issued_by(ca)
            return True
        except Exception:  # not this CA: try the next
            continue
    return False


def test_a_fresh_secret_has_a_ten_year_ca_and_a_90_day_leaf(tmp_path: Path) -> None:
    plan = manager(tmp_path)._next({})
    assert plan is not None
    data, what = plan
    assert what == "webhook CA issued"
    ca, leaf = certs(data, "ca.crt")[0], certs(data, "tls.crt")[0]
    now = datetime.datetime.now(datetime.UTC)
    assert ca.not_valid_after_utc - now > 3649 * DAY
    assert 89 * DAY < leaf.not_valid_after_utc - now <= 90 * DAY
    assert certs(data, "ca-bundle.crt") == [ca] and trusted_by_bundle(data, data)
    assert manager(tmp_path)._next(data) is None, "a fresh Secret is good as it is"


def test_a_due_leaf_is_reissued_from_the_same_ca_and_the_bundle_stays(tmp_path: Path) -> None:
    first, _ = manager(tmp_path)._next({}) or ({}, "")
    plan = manager(tmp_path, renew_before=90 * DAY)._next(first)
    assert plan is not None
    data, what = plan
    assert what == "serving certificate issued"
    assert {k: data[k] for k in ("ca.crt", "ca.key", "ca-bundle.crt")} == \
        {k: first[k] for k in ("ca.crt", "ca.key", "ca-bundle.crt")}
    assert data["tls.crt"] != first["tls.crt"]
    assert trusted_by_bundle(data, first) and trusted_by_bundle(data, data), "old and new leaf both trusted"


def test_a_due_ca_is_replaced_and_the_old_one_stays_trusted(tmp_path: Path) -> None:
    first, _ = manager(tmp_path)._next({}) or ({}, "")
    plan = manager(tmp_path, ca_renew_before=3651 * DAY)._next(first)
    assert plan is not None
    data, what = plan
    assert what == "webhook CA replaced"
    assert data["ca.crt"] != first["ca.crt"]
    assert [c.subject for c in certs(data, "ca-bundle.crt")] == [certs(data, "ca.crt")[0].subject] * 2
    assert trusted_by_bundle(data, first), "the old leaf is trusted during the overlap"
    assert trusted_by_bundle(data, data)


def test_a_secret_of_the_old_format_gets_a_ca_key_and_keeps_its_ca_trusted(tmp_path: Path) -> None:
    first, _ = manager(tmp_path)._next({}) or ({}, "")
    old = {k: first[k] for k in ("tls.crt", "tls.key", "ca.crt")}  # before the CA key was kept
    plan = manager(tmp_path)._next(old)
    assert plan is not None
    data, _ = plan
    assert "ca.key" in data and trusted_by_bundle(data, old)


def test_a_leaf_for_other_names_is_reissued(tmp_path: Path) -> None:
    first, _ = manager(tmp_path)._next({}) or ({}, "")
    other = WebhookCertManager(cast(Client, None), secret_name="s", namespace="ns", cert_dir=tmp_path,
                               endpoint=WebhookEndpoint(service="renamed"), configuration_name=None)
    plan = other._next(first)
    assert plan is not None and plan[1] == "serving certificate issued"
