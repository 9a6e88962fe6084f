"""Download ``tuning.input.urls`` into the data volume (the tuning job's init container).

    python -m kaito_presets.runtime.download --dest /mnt/data [--max-bytes 10737418240] URL [URL ...]

Safety: only ``http``/``https``; the host is resolved and refused when any address is not globally
routable (loopback, private, link-local such as the cloud metadata endpoint 169.254.169.254, CGNAT,
multicast, reserved); the address actually connected to is checked again (DNS rebinding), and every
redirect hop goes through the same checks. Size: ``Content-Length`` above the limit is refused before
reading, and the stream is cut (and the partial file removed) the moment it passes the limit.
Retries: connection errors, 408/429/5xx are retried with exponential backoff; other 4xx are not.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

log = logging.getLogger("kaito.download")

DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_ATTEMPTS = 4
MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DownloadError(RuntimeError):
    """A download that failed for good (after retries where retrying makes sense)."""


class RefusedTarget(DownloadError):
    """The URL points at a non-public address or a scheme we do not fetch."""


class TooLarge(DownloadError):
    """The body is over the size limit."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class Policy:
    max_bytes: int = DEFAULT_MAX_BYTES
    # Test-only escape hatch: networks allowed although not public. Never set from the CLI.
    allow_networks: tuple[IPNetwork, ...] = ()

    def check_address(self, host: str, addr: str) -> None:
        ip: IPAddress = ipaddress.ip_address(addr.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_networks):
            return
        if not ip.is_global or ip.is_multicast:
            raise RefusedTarget(f"refusing {host}: it resolves to {ip}, which is not a public address")


def _networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _resolve(host: str, port: int, policy: Policy) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _Retryable(f"cannot resolve {host}: {exc}") from exc
    addrs = sorted({str(info[4][0]) for info in infos})
    if not addrs:
        raise _Retryable(f"{host} resolved to no address")
    for addr in addrs:  # every address: a name with one private record is refused outright
        policy.check_address(host, addr)
    return addrs


class _CheckedHTTPConnection(http.client.HTTPConnection):
    policy: Policy

    def connect(self) -> None:
        super().connect()
        self.policy.check_address(self.host, self.sock.getpeername()[0])


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    policy: Policy

    def connect(self) -> None:
        super().connect()
        self.policy.check_address(self.host, self.sock.getpeername()[0])


def _filename(url: str, disposition: str | None, index: int) -> str:
    name = ""
    if disposition:
        m = re.search(r"filename\*=(?:UTF-8'')?([^;]+)", disposition) or re.search(
            r'filename="?([^";]+)"?', disposition
        )
        if m:
            name = unquote(m.group(1).strip())
    if not name:
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".")
    return name or f"data-{index}"


def _fetch_once(
    url: str, dest_dir: Path, index: int, policy: Policy, timeout: float, *, avoid: Collection[str] = ()
) -> Path:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedTarget(f"refusing {current!r}: only http(s) URLs with a host are fetched")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        _resolve(parts.hostname, port, policy)
        conn: _CheckedHTTPConnection | _CheckedHTTPSConnection
        if parts.scheme == "https":
            conn = _CheckedHTTPSConnection(parts.hostname, port, timeout=timeout, context=ssl.create_default_context())
        else:
            conn = _CheckedHTTPConnection(parts.hostname, port, timeout=timeout)
        conn.policy = policy
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": "kaito-downloader/1", "Accept-Encoding": "identity"})
            resp = conn.getresponse()
        except RefusedTarget:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Retryable(f"{parts.hostname}: {exc}") from exc
        try:
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise DownloadError(f"{current}: redirect without a Location")
                current = urljoin(current, location)
                continue
            if resp.status in _RETRY_STATUS:
                raise _Retryable(f"{current}: HTTP {resp.status}")
            if resp.status != 200:
                raise DownloadError(f"{current}: HTTP {resp.status} {resp.reason}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise TooLarge(f"{url}: {int(length)} bytes is over the limit of {policy.max_bytes}")
            name = _filename(current, resp.getheader("Content-Disposition"), index)
            if name in avoid:  # another URL of the same batch already wrote this name: keep both
                name = f"{index}-{name}"
            target = dest_dir / name
            tmp = target.with_name(f".{target.name}.part")
            got = 0
            try:
                with tmp.open("wb") as fh:
                    while True:
                        try:
                            chunk = resp.read(_CHUNK)
                        except (OSError, http.client.HTTPException) as exc:
                            raise _Retryable(f"{current}: connection lost after {got} bytes: {exc}") from exc
                        if not chunk:
                            break
                        got += len(chunk)
                        if got > policy.max_bytes:
                            raise TooLarge(f"{url}: body is over the limit of {policy.max_bytes} bytes")
                        fh.write(chunk)
                if length and length.isdigit() and got != int(length):
                    raise _Retryable(f"{current}: got {got} of {length} bytes")
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            return target
        finally:
            conn.close()
    raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects")


def download(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    index: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 1.0,
    timeout: float = 60.0,
    allow_networks: Iterable[str] = (),
    avoid: Collection[str] = (),
) -> Path:
    """Fetch one URL into ``dest_dir``; return the file written."""
    policy = Policy(max_bytes=max_bytes, allow_networks=_networks(allow_networks))
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            path = _fetch_once(url, dest, index, policy, timeout, avoid=avoid)
            log.info("downloaded %s -> %s (%d bytes)", url, path, path.stat().st_size)
            return path
        except _Retryable as exc:
            last = exc
            log.warning("attempt %d/%d failed: %s", attempt, attempts, exc)
            if attempt < attempts:
                time.sleep(backoff * 2 ** (attempt - 1))
    raise DownloadError(f"giving up on {url} after {attempts} attempts: {last}")


def download_all(urls: Sequence[str], dest_dir: str | os.PathLike[str], **kwargs: Any) -> list[Path]:
    """Fetch every URL in order; two URLs with the same file name both survive (``<i>-<name>``)."""
    paths: list[Path] = []
    for i, url in enumerate(urls):
        paths.append(download(url, dest_dir, index=i, avoid={p.name for p in paths}, **kwargs))
    return paths


#: JSON {host: mirror base URL}, set by the operator: a URL on that host is fetched from the mirror
#: instead (same path and query), and the mirror may be at a private address (the operator chose it).
URL_MIRRORS_ENV = "KAITO_URL_MIRRORS"


def load_url_mirrors(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    raw = environ.get(URL_MIRRORS_ENV) or "{}"
    try:
        mirrors = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DownloadError(f"{URL_MIRRORS_ENV} is not JSON: {exc}") from exc
    if not isinstance(mirrors, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mirrors.items()):
        raise DownloadError(f"{URL_MIRRORS_ENV} must be a JSON object of host -> mirror URL")
    return {k.lower(): v for k, v in mirrors.items()}


def mirrored(url: str, mirrors: Mapping[str, str]) -> tuple[str, list[str]]:
    """``url`` with its host replaced by the operator's mirror, and the addresses that mirror may have."""
    parts = urlsplit(url)
    base = mirrors.get((parts.hostname or "").lower()) or mirrors.get("*")  # "*": every other host
    if base is None:
        return url, []
    mirror = urlsplit(base)
    if mirror.scheme not in ("http", "https") or not mirror.hostname:
        raise DownloadError(f"mirror {base!r} for {parts.hostname} is not an http(s) URL")
    target = urlunsplit((mirror.scheme, mirror.netloc, mirror.path.rstrip("/") + parts.path, parts.query, ""))
    port = mirror.port or (443 if mirror.scheme == "https" else 80)
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(mirror.hostname, port, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        raise DownloadError(f"mirror {mirror.hostname} for {parts.hostname} does not resolve: {exc}") from exc
    return target, sorted(addrs)


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    p = argparse.ArgumentParser(prog="python -m kaito_presets.runtime.download")
    p.add_argument("urls", nargs="*", help="URLs (or set KAITO_DATA_URLS, one per line)")
    p.add_argument("--dest", default="/mnt/data")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    p.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS)
    p.add_argument("--timeout", type=float, default=60.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    urls = args.urls or [u.strip() for u in os.environ.get("KAITO_DATA_URLS", "").splitlines() if u.strip()]
    if not urls:
        print("error: no URLs given", file=sys.stderr)
        return 2
    try:
        mirrors = load_url_mirrors()
        paths: list[Path] = []
        for i, url in enumerate(urls):
            target, allow = mirrored(url, mirrors)
            if target != url:
                log.info("fetching %s from the mirror %s", urlsplit(url).hostname, urlsplit(target).netloc)
            paths.append(download(target, args.dest, index=i, avoid={p.name for p in paths},
                                  max_bytes=args.max_bytes, attempts=args.attempts, timeout=args.timeout,
                                  allow_networks=allow))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "downloaded", "files": [str(x) for x in paths]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
