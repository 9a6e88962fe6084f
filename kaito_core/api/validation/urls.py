"""URL checks of the validator: where a Workspace may download from.

URL checks look at the URL only: the scheme must be http(s), and hosts given as IP
literals must be public by :func:`kaito_presets.egress.address_problem` (the check the
downloader makes too: not loopback, private, link-local, cloud platform addresses, nor
any of those inside an IPv6 form), and well-known local or metadata host names
(localhost, metadata.google.internal, *.svc, *.internal, ...) are refused. Names are not resolved: a public name that
resolves to a private address passes here; the download runs in the tuning pod,
where network policy is the control for that.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from kaito_presets.egress import address_problem, redact_url

from kaito_core.api.errors import Rule

# Every pattern is used with fullmatch: "$" would also match before a trailing newline.
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}")

_BLOCKED_HOSTS = frozenset({
    "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal",
    "kubernetes", "kubernetes.default",
})
_BLOCKED_SUFFIXES = (".localhost", ".localdomain", ".local", ".internal", ".svc", ".cluster.local")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # address_problem looks inside ::ffff:10.0.0.1
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):  # 127.1, 2130706433, 0x7f.0.0.1: what curl and friends accept
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def url_problem(url: str) -> tuple[str, str] | None:
    """Why ``url`` may not be downloaded from, as (rule, message); None when it is fine.

    The message shows the URL without its query string (:func:`kaito_presets.egress.redact_url`): it
    reaches the Workspace's status, Events and the webhook's log, and a pre-signed URL's credentials
    live there.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return Rule.INVALID_URL, f"{shown!r} is not a valid URL; give a public http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https"):
        return Rule.INVALID_URL, f"{shown!r} is not an http(s) URL; give a public http:// or https:// URL"
    if not host:
        return Rule.INVALID_URL, f"{shown!r} has no host; give a public http:// or https:// URL"
    ip = _ip_literal(host)
    if ip is not None:
        problem = address_problem(ip)
        if problem:
            return Rule.FORBIDDEN_URL, (f"{shown!r} points at {problem}; give a public URL "
                                        "(data inside the cluster can come from an image or a volumeSource)")
        return None
    if host in _BLOCKED_HOSTS or host.endswith(_BLOCKED_SUFFIXES):
        return Rule.FORBIDDEN_URL, (f"{shown!r} points at {host!r}, a local, in-cluster or cloud metadata host; "
                                    "give a public URL (in-cluster data can come from an image or a volumeSource)")
    return None
