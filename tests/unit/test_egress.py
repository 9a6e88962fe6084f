"""Where a download may go (issue 17, item 6): one address check and one URL redaction, in one home
(``kaito_presets.egress``), used by the validator's ``url_problem`` and by the tuning downloader.

``ipaddress.is_global`` on Python 3.11 calls every address below public; each is refused here, with the
expected outcome written down (not computed by the code under test).
"""

from __future__ import annotations

import pytest

from kaito_core.api import Rule, url_problem

# (address, fragment of the problem; None: a public address)
ADDRESSES: list[tuple[str, str | None]] = [
    ("93.184.216.34", None),
    ("2606:4700::1111", None),
    ("64:ff9b::5db8:d822", None),  # NAT64 of 93.184.216.34: how an IPv6-only cluster reaches the internet
    ("2002:5db8:d822::1", None),  # 6to4 of 93.184.216.34
    ("::ffff:93.184.216.34", None),  # IPv4-mapped: the socket connects to 93.184.216.34
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("::127.0.0.1", "a loopback address (127.0.0.1, inside the IPv4-compatible address ::7f00:1)"),
    ("::169.254.169.254", "a cloud metadata address (169.254.169.254, inside the IPv4-compatible address"),
    ("::8.8.8.8", "an IPv4-compatible IPv6 address"),  # deprecated form: never a real target
    ("64:ff9b::a9fe:a9fe", "a cloud metadata address (169.254.169.254, inside the NAT64 address "
                           "64:ff9b::a9fe:a9fe)"),
    ("64:ff9b::a00:1", "a private address (10.0.0.1, inside the NAT64 address"),
    ("64:ff9b:1::a9fe:a9fe", "a local-use NAT64 address"),
    ("2002:a9fe:a9fe::1", "a cloud metadata address (169.254.169.254, inside the 6to4 address"),
    ("2002:7f00:1::1", "a loopback address (127.0.0.1, inside the 6to4 address"),
    ("::ffff:0:a9fe:a9fe", "a cloud metadata address (169.254.169.254, inside the IPv4-translated address"),
    ("::ffff:0:808:808", "an IPv4-translated IPv6 address"),
    ("::ffff:169.254.169.254", "a cloud metadata address (169.254.169.254"),
    ("168.63.129.16", "the Azure platform address (168.63.129.16"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("192.0.0.192", "a cloud metadata address"),  # Oracle Cloud
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("10.1.2.3", "a private address"),
    ("fd00::1", "a private address"),
    ("100.64.0.1", "a non-public address"),  # CGNAT
    ("192.0.0.8", "a non-public address"),  # IETF protocol assignments
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("2001:db8::1", "a private address (2001:db8::1)"),  # documentation: Python counts it private
    ("2001::1", "a private address (2001::1)"),  # Teredo
]


@pytest.mark.parametrize(("address", "problem"), ADDRESSES, ids=[a for a, _ in ADDRESSES])
def test_address_problem(address: str, problem: str | None) -> None:
    from kaito_presets.egress import address_problem

    found = address_problem(address)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


@pytest.mark.parametrize(("address", "problem"), ADDRESSES, ids=[a for a, _ in ADDRESSES])
def test_url_problem_and_the_downloader_agree(address: str, problem: str | None) -> None:
    from kaito_presets.runtime.download import Policy, RefusedTarget

    host = f"[{address}]" if ":" in address else address
    found = url_problem(f"http://{host}/data.parquet")
    if problem is None:
        assert found is None
        Policy().check_address("example.com", address)
    else:
        assert found is not None and found[0] == Rule.FORBIDDEN_URL and problem in found[1], found
        with pytest.raises(RefusedTarget, match="which is not a public address"):
            Policy().check_address("example.com", address)


def test_one_function_in_one_home() -> None:
    from kaito_presets import egress
    from kaito_presets.runtime import download

    from kaito_core.api import validation

    assert download.address_problem is egress.address_problem
    assert validation.address_problem is egress.address_problem
    assert download.redact_url is egress.redact_url and validation.redact_url is egress.redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("https://huggingface.co/d/train.parquet?download=true", "https://huggingface.co/d/train.parquet?REDACTED"),
    ("https://acct.blob.core.windows.net/c/d.json?sv=2024&sig=SECRET#part",
     "https://acct.blob.core.windows.net/c/d.json?REDACTED"),
    ("https://user:SECRET@example.com/d.json", "https://REDACTED@example.com/d.json"),
    ("https://example.com/d.json", "https://example.com/d.json"),
    ("http://[::1]:8080/d", "http://[::1]:8080/d"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, shown: str) -> None:
    from kaito_presets.egress import redact_url

    assert redact_url(url) == shown


def test_validation_messages_do_not_repeat_a_query_string() -> None:
    for url in ("http://127.0.0.1/d?sig=SECRET", "ftp://example.com/d?sig=SECRET", "http://localhost/d?sig=SECRET",
                "http://example.com:99999/d?sig=SECRET"):
        found = url_problem(url)
        assert found is not None and "SECRET" not in found[1] and "?REDACTED" in found[1], found
