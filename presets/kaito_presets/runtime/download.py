"""Download ``tuning.input.urls`` into the data volume (the tuning job's init container).

    python -m kaito_presets.runtime.download --dest /mnt/data [--max-bytes 10737418240] [--deadline 3600] URL ...

Safety: only ``http``/``https``; the host is resolved and refused when any address is not public by
:func:`kaito_presets.egress.address_problem` (the validator's check too: loopback, private, link-local,
CGNAT, multicast, reserved, the clouds' metadata and platform addresses such as 169.254.169.254 and
168.63.129.16, and any of those inside an IPv6 form such as ``::ffff:0:a.b.c.d`` or NAT64); the address
actually connected to is checked again (DNS rebinding), and every redirect hop goes through the same
checks. Size: ``Content-Length`` above the limit is refused before reading, and the stream is cut (and
the partial file removed) the moment it passes the limit. Time: each file has a total deadline
(``--deadline``, retries and backoff included), not only a socket timeout, so a body dripped a byte at a
time cannot hold the GPU node; past it the connection is shut and the file given up.
Retries: connection errors, 408/429/5xx are retried with exponential backoff; other 4xx are not.
Logs and errors show URLs without their query string (:func:`kaito_presets.egress.redact_url`): a
pre-signed URL's credentials live there.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from kaito_presets.egress import IPAddress, address_problem, redact_url

log = logging.getLogger("kaito.download")

DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_ATTEMPTS = 4
#: Seconds one file may take in all (every attempt and backoff included).
DEFAULT_DEADLINE = 3600.0
MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DownloadError(RuntimeError):
    """A download that failed for good (after retries where retrying makes sense)."""


class RefusedTarget(DownloadError):
    """The URL points at a non-public address or a scheme we do not fetch."""


class TooLarge(DownloadError):
    """The body is over the size limit."""


class DeadlineExceeded(DownloadError):
    """The file did not arrive within its total deadline."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class Policy:
    max_bytes: int = DEFAULT_MAX_BYTES
    # Test-only escape hatch: networks allowed although not public. Never set from the CLI.
    allow_networks: tuple[IPNetwork, ...] = ()

    def check_address(self, host: str, addr: str) -> None:
        ip: IPAddress = ipaddress.ip_address(addr.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if any(ip in net or (mapped is not None and mapped in net) for net in self.allow_networks):
            return
        problem = address_problem(ip)
        if problem is not None:
            raise RefusedTarget(f"refusing {host}: it resolves to {problem}, which is not a public address")


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


class _Watchdog:
    """Shuts the connection's socket at the deadline, whatever it is blocked in (connect, headers, body)."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float):
        self.conn = conn
        self.fired = threading.Event()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired.set()
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # the plain socket's shutdown: an SSLSocket's own would drop its state under a reading thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        if math.isfinite(self._timer.interval):  # no deadline: nothing to watch
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _deadline_error(url: str, total: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"{redact_url(url)} did not finish within {total} s (the download's deadline); "
                            "use a faster source or raise the deadline")


def _fetch_once(
    url: str, dest_dir: Path, index: int, policy: Policy, timeout: float, *, avoid: Collection[str] = (),
    deadline: float = math.inf, total: float = math.inf,
) -> Path:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        shown = redact_url(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedTarget(f"refusing {shown!r}: only http(s) URLs with a host are fetched")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        _resolve(parts.hostname, port, policy)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _deadline_error(url, total)
        conn: _CheckedHTTPConnection | _CheckedHTTPSConnection
        if parts.scheme == "https":
            conn = _CheckedHTTPSConnection(parts.hostname, port, timeout=min(timeout, left),
                                           context=ssl.create_default_context())
        else:
            conn = _CheckedHTTPConnection(parts.hostname, port, timeout=min(timeout, left))
        conn.policy = policy
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        with _Watchdog(conn, left) as watchdog:
            try:
                try:
                    conn.request("GET", path, headers={"User-Agent": "kaito-downloader/1",
                                                       "Accept-Encoding": "identity"})
                    resp = conn.getresponse()
                except RefusedTarget:
                    raise
                except (OSError, http.client.HTTPException) as exc:
                    if watchdog.fired.is_set():
                        raise _deadline_error(url, total) from exc
                    raise _Retryable(f"{parts.hostname}: {exc}") from exc
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.getheader("Location")
                    if not location:
                        raise DownloadError(f"{shown}: redirect without a Location")
                    current = urljoin(current, location)
                    continue
                if resp.status in _RETRY_STATUS:
                    raise _Retryable(f"{shown}: HTTP {resp.status}")
                if resp.status != 200:
                    raise DownloadError(f"{shown}: HTTP {resp.status} {resp.reason}")
                return _save(resp, current=current, url=url, dest_dir=dest_dir, index=index, policy=policy,
                             avoid=avoid, watchdog=watchdog, total=total)
            finally:
                conn.close()
    raise DownloadError(f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects")


def _save(resp: http.client.HTTPResponse, *, current: str, url: str, dest_dir: Path, index: int, policy: Policy,
          avoid: Collection[str], watchdog: _Watchdog, total: float) -> Path:
    """Stream the body into ``dest_dir`` (a ``.part`` file renamed at the end; removed on any failure)."""
    shown = redact_url(current)
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise TooLarge(f"{redact_url(url)}: {int(length)} bytes is over the limit of {policy.max_bytes}")
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
                    chunk = resp.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    if watchdog.fired.is_set():
                        raise _deadline_error(url, total) from exc
                    raise _Retryable(f"{shown}: connection lost after {got} bytes: {exc}") from exc
                if watchdog.fired.is_set():
                    raise _deadline_error(url, total)
                if not chunk:
                    break
                got += len(chunk)
                if got > policy.max_bytes:
                    raise TooLarge(f"{redact_url(url)}: body is over the limit of {policy.max_bytes} bytes")
                fh.write(chunk)
        if length and length.isdigit() and got != int(length):
            raise _Retryable(f"{shown}: got {got} of {length} bytes")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def download(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    index: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 1.0,
    timeout: float = 60.0,
    deadline: float = DEFAULT_DEADLINE,
    allow_networks: Iterable[str] = (),
    avoid: Collection[str] = (),
) -> Path:
    """Fetch one URL into ``dest_dir``; return the file written.

    ``timeout`` bounds each socket operation; ``deadline`` (seconds) bounds the whole file, every
    attempt and backoff included (:class:`DeadlineExceeded` past it, not retried).
    """
    policy = Policy(max_bytes=max_bytes, allow_networks=_networks(allow_networks))
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    until = time.monotonic() + deadline
    shown = redact_url(url)
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            path = _fetch_once(url, dest, index, policy, timeout, avoid=avoid, deadline=until, total=deadline)
            log.info("downloaded %s -> %s (%d bytes)", shown, path, path.stat().st_size)
            return path
        except _Retryable as exc:
            last = exc
            log.warning("attempt %d/%d failed: %s", attempt, attempts, exc)
            if attempt < attempts:
                pause = backoff * 2 ** (attempt - 1)
                if time.monotonic() + pause >= until:
                    raise _deadline_error(url, deadline) from exc
                time.sleep(pause)
    raise DownloadError(f"giving up on {shown} after {attempts} attempts: {last}")


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
        addrs = {str(info[4][0]) for info in socket.getaddrinfo(mirror.hostname, port, proto=socket.IPPROTO_TCP)}
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
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per socket operation")
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE,
                   help="seconds one file may take in all, retries included")
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
                                  deadline=args.deadline, allow_networks=allow))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "downloaded", "files": [str(x) for x in paths]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
