"""A private network namespace for real test nodes, and a TCP proxy into it.

Real nodes (kubelet + containerd) need a node IP that is not loopback, and their
pods need a bridge. Neither may touch the host's network, so one run makes one
network namespace ``kaito-<id>`` and puts everything there:

* ``lo`` up (so each node's containerd streaming server and the proxy work);
* a port-less bridge device ``knodes`` (the kernel here has no dummy module)
  carrying one ``/32`` address per node (``10.231.0.<n>``), the address each
  kubelet registers and binds;
* per node, a CNI bridge (made by the bridge plugin, inside this netns) for its
  pods' subnet ``10.232.<n>.0/24``;
* a :class:`LoopbackProxy`: a listening socket *created inside* the namespace
  on its ``127.0.0.1`` that forwards each connection to ``127.0.0.1:<port>`` of
  the host, where the control plane listens. A socket keeps the namespace it
  was created in, so one thread enters the namespace (``setns``), creates and
  binds the socket, and leaves again; the forwarding side dials from the host
  namespace. Nothing is routed to or from the host's interfaces; the host's
  routing table and iptables are never touched.

:meth:`NetworkNamespace.delete` closes the proxies and removes the namespace;
every link, route and (namespace-local) iptables rule inside goes with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "NETNS_PREFIX",
    "LoopbackProxy",
    "NetworkNamespace",
    "list_kaito_netns",
    "socket_in_netns",
]

NETNS_PREFIX = "kaito-"
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")


def list_kaito_netns() -> list[str]:
    """The names of the network namespaces this package made (``ip netns list``)."""
    if not _NETNS_DIR.is_dir():
        return []
    return sorted(path.name for path in _NETNS_DIR.iterdir() if path.name.startswith(NETNS_PREFIX))


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def socket_in_netns(path: Path, make: Callable[[], socket.socket]) -> socket.socket:
    """Run ``make`` on a fresh thread that sits in the namespace at ``path``; return its socket.

    A new thread is used (and discarded) so that the caller's thread never changes
    namespace, even if switching back failed.
    """
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            with open("/proc/thread-self/ns/net") as home, open(path) as target:
                _setns(target.fileno())
                try:
                    result.append(make())
                finally:
                    _setns(home.fileno())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=worker, name="kaito-netns-setns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class LoopbackProxy:
    """Listen on ``127.0.0.1:<port>`` inside a namespace; forward to ``127.0.0.1:<target>`` of the host.

    ``listen_address`` may be another address of the namespace (one on its ``knodes`` device), so
    that pods, which have their own loopback, reach the host's port there too."""

    def __init__(self, netns_path: Path, target_port: int, listen_port: int = 0, listen_address: str = "127.0.0.1"):
        self.target_port = target_port
        self.listen_address = listen_address

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((listen_address, listen_port))
            sock.listen(128)
            return sock

        self._listener = socket_in_netns(netns_path, make)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"kaito-proxy-{self.port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                outer.settimeout(None)
            except OSError:
                inner.close()
                continue
            with self._lock:
                if self._closed.is_set():
                    inner.close()
                    outer.close()
                    return
                self._conns.update((inner, outer))
            remaining = [2]  # both directions must finish before the pair is closed
            for src, dst in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pipe, args=(src, dst, remaining), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, remaining: list[int]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    for sock in (src, dst):
                        self._conns.discard(sock)
                        sock.close()

    def close(self) -> None:
        """Stop accepting, close every open connection: nothing holds the namespace afterwards."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for sock in list(self._conns):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._conns.clear()


class NetworkNamespace:
    """``ip netns add kaito-<id>`` with ``lo`` up and a device for node addresses."""

    NODE_DEVICE = "knodes"

    def __init__(self, name: str | None = None):
        self.name = name or f"{NETNS_PREFIX}{uuid.uuid4().hex[:8]}"
        if not self.name.startswith(NETNS_PREFIX):
            raise ValueError(f"namespace names start with {NETNS_PREFIX!r}: {self.name!r}")
        self._proxies: list[LoopbackProxy] = []
        self._created = False

    @property
    def path(self) -> Path:
        return _NETNS_DIR / self.name

    def create(self) -> None:
        _ip("netns", "add", self.name)
        self._created = True
        try:
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", self.NODE_DEVICE, "type", "bridge")
            self.ip("link", "set", self.NODE_DEVICE, "up")
        except BaseException:
            self.delete()
            raise

    def ip(self, *args: str) -> str:
        """``ip -n <ns> ...``: run an ip command inside the namespace."""
        return _ip("-n", self.name, *args)

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace (network only: the mounts stay shared)."""
        return ["nsenter", f"--net={self.path}", "--"]

    def add_address(self, address: str) -> None:
        self.ip("addr", "add", f"{address}/32", "dev", self.NODE_DEVICE)

    def links(self) -> list[str]:
        out = self.ip("-o", "link", "show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def proxy_to_host(self, host_port: int, *, listen_address: str = "127.0.0.1",
                      listen_port: int = 0) -> LoopbackProxy:
        """Make ``<listen_address>:<port>`` inside the namespace reach ``127.0.0.1:<host_port>`` on the host."""
        proxy = LoopbackProxy(self.path, host_port, listen_port=listen_port, listen_address=listen_address)
        self._proxies.append(proxy)
        return proxy

    def delete(self) -> None:
        """Close the proxies and remove the namespace (its links, routes and rules go with it)."""
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()
        if self._created and self.path.exists():
            _ip("netns", "del", self.name)
        self._created = False

    def __enter__(self) -> NetworkNamespace:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()
