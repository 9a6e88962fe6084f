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
