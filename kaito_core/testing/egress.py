"""The apiserver's way to real nodes: an HTTP CONNECT proxy for its ``cluster`` egress.

Real nodes (:mod:`kaito_core.testing.realnode`) live in a network namespace of
their own: their kubelets listen on ``10.231.0.<n>``, their pods on
``10.232.<n>.0/24``, kube-proxy programs the Service range there. The apiserver
runs on the host's loopback and cannot dial any of it, so ``kubectl logs``,
``exec``, ``attach`` (``kubectl run -it``) and ``port-forward`` would fail.

Kubernetes has a documented answer for an apiserver that cannot reach its nodes
directly: the egress selector (KEP 1281, konnectivity's hook). The control plane
starts the apiserver with an ``EgressSelectorConfiguration`` whose ``cluster``
selection sends every connection to nodes, pods and Services through this
proxy (HTTP CONNECT over a Unix socket). For each CONNECT the proxy looks for a
*route*, a file a :class:`~kaito_core.testing.realnode.RealNodes` run writes
into the control plane's folder naming its namespace and networks; an address
inside one is dialled from inside that namespace, anything else is dialled
as the apiserver itself would have (so kwok nodes and URL webhooks behave
exactly as without the proxy). The proxy only connects; it never routes a
namespace's traffic out.

Run by :class:`~kaito_core.testing.controlplane.ControlPlane` as
``python -m kaito_core.testing.egress --socket PATH --routes DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kaito_core.testing.netns import socket_in_netns

__all__ = ["Route", "egress_selector_config", "find_route", "register_route", "routes_dir", "unregister_route"]

_MAX_HEADER = 16 * 1024
_DIAL_TIMEOUT = 10.0


def routes_dir(kubeconfig: Path) -> Path:
    """Where routes of the control plane whose kubeconfig this is are written (beside the kubeconfig)."""
    return kubeconfig.parent / "egress.d"


@dataclass(frozen=True)
class Route:
    """Addresses reached from inside one network namespace."""

    netns: Path
    networks: tuple[ipaddress.IPv4Network, ...]

    def covers(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.networks)


def register_route(kubeconfig: Path, name: str, netns: Path, networks: Sequence[str]) -> Path | None:
    """Tell the control plane's egress proxy (if it runs one) that ``networks`` live in ``netns``."""
    folder = routes_dir(kubeconfig)
    if not folder.is_dir():  # a control plane without the proxy (an external cluster): nothing to tell
        return None
    path = folder / f"{name}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"netns": str(netns), "networks": list(networks)}))
    os.replace(partial, path)
    return path


def unregister_route(kubeconfig: Path, name: str) -> None:
    (routes_dir(kubeconfig) / f"{name}.json").unlink(missing_ok=True)


def _load_routes(folder: Path) -> list[Route]:
    routes = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_text())
            netns = Path(data["netns"])
            if netns.exists():
                routes.append(Route(netns, tuple(ipaddress.IPv4Network(n) for n in data["networks"])))
    return routes


def find_route(folder: Path, host: str) -> Route | None:
    """The newest live route covering ``host`` (an IP literal), or None: dial it directly."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return next((r for r in _load_routes(folder) if r.covers(address)), None)


def egress_selector_config(socket_path: Path) -> str:
    """The apiserver's ``--egress-selector-config-file``: ``cluster`` traffic through the proxy's socket.

    A Unix socket, not TCP: kube-apiserver 1.37 dereferences a missing ``tlsConfig`` for an
    ``http://`` TCP proxy and panics at start."""
    return f"""apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: {socket_path}
"""


def _dial(route: Route | None, host: str, port: int) -> socket.socket:
    def make() -> socket.socket:
        return socket.create_connection((host.strip("[]"), port), timeout=_DIAL_TIMEOUT)

    sock = make() if route is None else socket_in_netns(route.netns, make)
    sock.settimeout(None)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _handle(folder: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        target = rest.split(" ", 1)[0]
        host, _, port_text = target.rpartition(":")
        if method != "CONNECT" or not host or not port_text.isdigit():
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        route = await asyncio.to_thread(find_route, folder, host)
        try:
            sock = await asyncio.to_thread(_dial, route, host, int(port_text))
        except OSError as exc:
            reason = f"dial {target}{' in ' + route.netns.name if route else ''}: {exc}"
            writer.write(f"HTTP/1.1 502 Bad Gateway\r\nContent-Length: {len(reason)}\r\n\r\n{reason}".encode())
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=sock)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        writer.close()


async def serve(socket_path: Path, folder: Path, ready: asyncio.Event | None = None) -> None:
    await asyncio.to_thread(socket_path.unlink, missing_ok=True)
    server = await asyncio.start_unix_server(lambda r, w: _handle(folder, r, w), str(socket_path),
                                             limit=_MAX_HEADER)
    await asyncio.to_thread(socket_path.chmod, 0o600)  # the apiserver runs as root too
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito_core.testing.egress", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket to listen on")
    parser.add_argument("--routes", type=Path, required=True, help="folder of route files (routes_dir)")
    args = parser.parse_args(argv)
    args.routes.mkdir(parents=True, exist_ok=True)
    print(f"egress proxy on {args.socket}, routes in {args.routes}", file=sys.stderr, flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.socket, args.routes))
    finally:
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
