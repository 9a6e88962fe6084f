"""The leader's write fence: once its lease was not renewed within the renew deadline (a process
paused by SIGSTOP, a long GC pause, a frozen VM), a former leader sends no write, only reads."""

from __future__ import annotations

import json

import pytest
from test_engine_client import FakeTransport

from kaito_core.engine import (
    CONFIGMAP,
    Client,
    LeaderElectionLostError,
    LeaderElectionSettings,
    Manager,
    ManagerSettings,
)
from kaito_core.engine.clock import FakeClock
from kaito_core.engine.transport import RawResponse


def ok(body: object) -> RawResponse:
    return RawResponse(200, json.dumps(body).encode(), {})


async def test_a_leader_that_did_not_renew_in_time_sends_no_write() -> None:
    transport = FakeTransport(ok({"metadata": {"name": "a"}}), ok({"metadata": {"name": "a"}}),
                              ok({"metadata": {"name": "a"}}))
    client = Client(transport)
    manager = Manager(client, ManagerSettings(http_port=None, leader_election=LeaderElectionSettings(
        enabled=True, identity="me", lease_namespace="ns")))
    assert manager.elector is not None
    clock = FakeClock()
    manager.elector.clock = clock
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    await client.create(cm, kind=CONFIGMAP)  # never led: writes are not the fence's business (webhook Secret)
    manager.elector._last_renew = clock.now()
    manager.elector._set_leader(True)
    await client.create(cm, kind=CONFIGMAP)  # a fresh lease
    clock.advance(manager.settings.leader_election.renew_deadline)  # stopped, now resumed
    with pytest.raises(LeaderElectionLostError, match="not sending POST"):
        await client.create(cm, kind=CONFIGMAP)
    assert await client.get(CONFIGMAP, "a", "ns")  # reads still go
    assert [c["method"] for c in transport.calls] == ["POST", "POST", "GET"]
    assert manager.fenced_writes == 1


class _FlipFence:
    """Passes the client's early check, refuses when the transport checks as the bytes leave: what a
    leader sees when it is stopped after deciding a write and resumed past its lease."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        if len(self.calls) % 2 == 0:
            raise LeaderElectionLostError(f"not sending {method} {path}")


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_the_transport_checks_the_fence_again_as_the_bytes_leave(method: str) -> None:
    from aiohttp import web
    from kubernetes_asyncio import client as k8s

    from kaito_core.engine import ApiClientTransport

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.method)
        return web.json_response({"metadata": {"name": "a"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    transport = ApiClientTransport(k8s.ApiClient(configuration), owns_client=True)
    client = Client(transport)
    try:
        await client.get(CONFIGMAP, "a", "ns")  # a pooled connection is ready: nothing else to wait for
        fence = _FlipFence()
        client.write_fence = fence
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
        with pytest.raises(LeaderElectionLostError, match=f"not sending {method}"):
            if method == "POST":
                await client.create(cm, kind=CONFIGMAP)
            elif method == "PATCH":
                await client.patch(CONFIGMAP, "a", {"data": {"k": "v"}}, "ns")
            else:
                await client.delete(CONFIGMAP, "a", "ns")
        assert len(fence.calls) == 2, "the fence must be asked twice: before the attempt and as it is sent"
        assert seen == ["GET"], f"a refused write reached the server: {seen}"
        client.write_fence = None
        await client.create(cm, kind=CONFIGMAP)  # the connection is still usable afterwards
        assert seen == ["GET", "POST"]
    finally:
        await client.close()
        await runner.cleanup()
