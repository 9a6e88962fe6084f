"""Where a download may go, and how a URL is shown: the one home of both rules.

Used by the Workspace validator (``kaito_core.api.validation.url_problem``: IP literals in
``tuning.input.urls``) and by the tuning downloader (``kaito_presets.runtime.download``: every address
a name resolves to, and the address actually connected to), so the two can never disagree::

    address_problem("64:ff9b::a9fe:a9fe")
    # 'a cloud metadata address (169.254.169.254, inside the NAT64 address 64:ff9b::a9fe:a9fe)'
    address_problem("93.184.216.34")      # None: public
    redact_url("https://acct.blob.core.windows.net/c/d.json?sv=2024&sig=...")
    # 'https://acct.blob.core.windows.net/c/d.json?REDACTED'

``ipaddress``'s ``is_global`` is not enough on its own (Python 3.11 calls ``::127.0.0.1``,
``64:ff9b::a9fe:a9fe`` and ``168.63.129.16`` global), so: an IPv6 address that carries an IPv4
address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4) is judged by the IPv4 address
inside; the deprecated or local-only embeddings are refused whatever they carry; the cloud platforms'
own addresses (metadata endpoints, Azure's 168.63.129.16) are refused by name; then loopback,
link-local, unspecified, multicast, private and every other non-global range.

Standard library only: the runtime images and the controller both import it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PLATFORM_ADDRESSES", "IPAddress", "address_problem", "redact_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ip = ipaddress.ip_address

#: Addresses of the clouds' own services, which answer any VM (and so any pod that reaches them).
PLATFORM_ADDRESSES: dict[IPAddress, str] = {
    _ip("169.254.169.254"): "a cloud metadata address",  # AWS, Azure IMDS, GCP, OpenStack
    _ip("169.254.170.2"): "a cloud metadata address",  # AWS ECS task metadata
    _ip("fd00:ec2::254"): "a cloud metadata address",  # AWS over IPv6
    _ip("100.100.100.200"): "a cloud metadata address",  # Alibaba Cloud
    _ip("192.0.0.192"): "a cloud metadata address",  # Oracle Cloud
    _ip("168.63.129.16"): "the Azure platform address",  # Azure WireServer (VM agent, health, DNS)
}

#: Ranges that are not global although Python 3.11's ``is_global`` says they are.
_NOT_GLOBAL = (
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("192.88.99.0/24"),  # the deprecated 6to4 relay anycast
    ipaddress.ip_network("3fff::/20"),  # documentation (RFC 9637)
    ipaddress.ip_network("5f00::/16"),  # SRv6 SIDs
)

_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated (RFC 4291)
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT, RFC 2765)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215), any embedding


def _embedded(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str, bool] | None:
    """(IPv4 address inside, what the form is called, whether the form is refused whatever it carries)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped", False
    if ip in _COMPATIBLE and int(ip) > 1:  # not :: and ::1
        return low32, "IPv4-compatible", True
    if ip in _TRANSLATED:
        return low32, "IPv4-translated", True
    if ip in _NAT64:
        return low32, "NAT64", False
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4", False
    return None


def _plain_problem(ip: IPAddress) -> str | None:
    """The problem of an address judged on its own (no embedded address looked at)."""
    if ip in PLATFORM_ADDRESSES:
        return PLATFORM_ADDRESSES[ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (not ip.is_global or any(ip in net for net in _NOT_GLOBAL if net.version == ip.version),
         "a non-public address"),
    )
    return next((what for hit, what in checks if hit), None)


def address_problem(address: IPAddress | str) -> str | None:
    """Why nothing may be downloaded from ``address`` (with the address, for a message); None when public.

    Raises ``ValueError`` when ``address`` is a string that is no IP address.
    """
    ip = _ip(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inside = _embedded(ip)
        if inside is not None:
            v4, form, always = inside
            problem = _plain_problem(v4)
            if problem is not None:
                return f"{problem} ({v4}, inside the {form} address {ip})"
            if always:
                return f"an {form} IPv6 address ({ip}, a deprecated form; write the IPv4 address {v4})"
            return None
    problem = _plain_problem(ip)
    return f"{problem} ({ip})" if problem is not None else None


def redact_url(url: str) -> str:
    """``url`` as it may appear in a log, an Event or a condition: no query string (pre-signed URLs
    carry their credentials there), no fragment, no user or password."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rpartition("@")[2]
    query = "REDACTED" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
