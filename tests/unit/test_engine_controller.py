"""Controller error policy, predicates, handlers and leader election, without a control plane."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest

from kaito_core.engine import (
    CONFIGMAP,
    NODE,
    Client,
    Controller,
    EngineMetrics,
    EnqueueForOwner,
    EnqueueMapped,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    LeaderElectionSettings,
    LeaderElector,
    ManagerSettings,
    MockTransport,
    RawResponse,
    Request,
    ResourceKind,
    Result,
    RetryPolicy,
    SharedCache,
    TerminalError,
    WorkQueue,
    and_,
    annotations_changed,
    error_from_response,
    generation_changed,
    json_response,
    labels_changed,
    not_,
    or_,
)

WIDGET = ResourceKind("example.com", "v1", "Widget", "widgets")


def obj(name: str = "o", *, gen: int = 1, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, owners: list[dict[str, Any]] | None = None,
        ns: str | None = "ns", rv: str = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": gen, "labels": labels or {},
                            "annotations": annotations or {}, "resourceVersion": rv}
    if ns:
        meta["namespace"] = ns
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


# -- predicates

def test_generation_changed() -> None:
    assert not generation_changed.update(obj(gen=1, rv="1"), obj(gen=1, rv="2"))  # status-only write
    assert generation_changed.update(obj(gen=1), obj(gen=2))
    assert generation_changed.create(obj()) and generation_changed.delete(obj())


def test_labels_and_annotations_changed() -> None:
    assert labels_changed.update(obj(labels={"a": "1"}), obj(labels={"a": "2"}))
    assert not labels_changed.update(obj(labels={"a": "1"}), obj(labels={"a": "1"}, gen=5))
    assert annotations_changed.update(obj(), obj(annotations={"x": "y"}))
    assert not annotations_changed.update(obj(annotations={"x": "y"}), obj(annotations={"x": "y"}))


def test_not_just_a_heartbeat() -> None:
    from kaito_core.engine import not_just_a_heartbeat

    def node(rv: str, beat: str, ready: str = "True", taints: list[Any] | None = None) -> dict[str, Any]:
        return {"metadata": {"name": "n", "resourceVersion": rv}, "spec": {"taints": taints or []},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat,
                                           "lastTransitionTime": "t0"}]}}

    assert not not_just_a_heartbeat.update(node("1", "10:00"), node("2", "10:01"))
    assert not_just_a_heartbeat.update(node("1", "10:00"), node("2", "10:01", ready="False"))
    assert not_just_a_heartbeat.update(node("1", "10:00", taints=[{"key": "x"}]), node("2", "10:01"))
    assert not_just_a_heartbeat.create(node("1", "10:00")) and not_just_a_heartbeat.delete(node("1", "10:00"))


def test_combinators() -> None:
    either = or_(generation_changed, labels_changed)
    assert either.update(obj(), obj(labels={"a": "b"}))
    assert not either.update(obj(), obj(annotations={"a": "b"}))
    both = and_(generation_changed, labels_changed)
    assert not both.update(obj(), obj(gen=2))
    assert both.update(obj(), obj(gen=2, labels={"a": "b"}))
    assert not_(generation_changed).update(obj(), obj())


# -- handlers

def owner_ref(kind: str = "Widget", api_version: str = "example.com/v1", name: str = "w",
              controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": controller}


def test_enqueue_for_owner() -> None:
    queue: WorkQueue[Request] = WorkQueue(clock=FakeClock())
    handler = EnqueueForOwner(queue, WIDGET)
    handler.on_add(obj(owners=[owner_ref(name="w1")]))
    handler.on_add(obj(owners=[owner_ref(name="w2", controller=False)]))  # not the controller
    handler.on_add(obj(owners=[owner_ref(kind="Deployment", api_version="apps/v1", name="d")]))
    handler.on_add(obj(owners=[owner_ref(api_version="other.com/v1", name="w3")]))  # other group
    handler.on_add(obj(owners=[owner_ref(api_version="example.com/v2", name="w4")]))  # other version: same kind
    assert len(queue) == 2
    # An owner change enqueues the old owner and the new one.
    handler.on_update(obj(owners=[owner_ref(name="w1")]), obj(owners=[owner_ref(name="w5")]))
    assert len(queue) == 3


async def test_enqueue_for_cluster_scoped_owner() -> None:
    queue: WorkQueue[Request] = WorkQueue(clock=FakeClock())
    handler = EnqueueForOwner(queue, NODE)
    handler.on_add(obj(owners=[owner_ref(kind="Node", api_version="v1", name="n1")]))
    assert await queue.get() == Request(None, "n1")


async def test_enqueue_mapped_and_predicates() -> None:
    queue: WorkQueue[Request] = WorkQueue(clock=FakeClock())

    def map_fn(o: Mapping[str, Any]) -> list[Request]:
        if o["metadata"]["name"] == "bad":
            raise ValueError("bug in map fn")
        return [Request("a", "x"), Request("a", "y")]

    handler = EnqueueMapped(queue, map_fn, [generation_changed])
    handler.on_add(obj())
    handler.on_add(obj("bad"))
    assert len(queue) == 2
    await queue.get()
    await queue.get()
    handler.on_update(obj(gen=1), obj(gen=1, rv="9"))  # filtered by the predicate
    assert len(queue) == 0


# -- the controller's error policy

def quiet_transport() -> MockTransport:
    """An API server with nothing in it whose watches never send anything."""
    return MockTransport(lambda _request: json_response({"metadata": {"resourceVersion": "1"}, "items": []}),
                         stream_handler=lambda _request: [])


class Scripted:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.active: set[str] = set()
        self.overlap = False

    async def reconcile(self, request: Request) -> Result:
        name = request.name
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.active:
            self.overlap = True
        self.active.add(name)
        try:
            await asyncio.sleep(0.001)
            if name == "terminal":
                raise TerminalError("cannot fix")
            if name == "crash":
                raise ZeroDivisionError("bug")
            if name == "flaky" and self.calls[name] < 3:
                raise RuntimeError("transient")
            if name == "slow":
                await asyncio.sleep(10)
            if name == "periodic":
                return Result(requeue_after=0.05)
            if name == "again" and self.calls[name] < 3:
                return Result(requeue=True)
            return Result()
        finally:
            self.active.discard(name)


@pytest.fixture
async def controller() -> AsyncIterator[tuple[Controller, Scripted, EngineMetrics]]:
    reconciler = Scripted()
    ctl = (Controller.for_(WIDGET).with_workers(4).named("unit").with_reconcile_timeout(0.5)
           .with_rate_limiter(lambda: ItemExponentialFailureRateLimiter(0.001, 0.01)).build(reconciler))
    metrics = EngineMetrics()
    cache = SharedCache(Client(quiet_transport(), retry=RetryPolicy(attempts=1)))
    ctl.setup(cache, metrics)
    await cache.start()
    await cache.wait_for_sync(2)
    await ctl.start()
    yield ctl, reconciler, metrics
    await ctl.stop(0.1)
    await cache.stop()


async def settle(cond: Any, timeout: float = 10, debug: Any = None) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110 - polling a condition is the point here
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not settled: {debug() if debug else ''}") from None


async def test_error_policy(controller: tuple[Controller, Scripted, EngineMetrics]) -> None:
    ctl, rec, metrics = controller
    for name in ("ok", "terminal", "crash", "flaky", "periodic", "again", "slow"):
        ctl.queue.add(Request("ns", name))
    await settle(lambda: rec.calls.get("flaky", 0) >= 3 and rec.calls.get("periodic", 0) >= 3
                 and rec.calls.get("again", 0) >= 3 and rec.calls.get("crash", 0) >= 3
                 and rec.calls.get("slow", 0) >= 2 and "flaky" not in rec.active, debug=lambda: rec.calls)
    assert rec.calls["ok"] == 1
    assert rec.calls["terminal"] == 1  # TerminalError: never retried
    assert ctl.queue.num_requeues(Request("ns", "flaky")) == 0  # forgotten after success
    assert ctl.queue.num_requeues(Request("ns", "crash")) >= 2  # still backing off
    assert not rec.overlap
    assert ctl.running  # no worker died
    text = generate_latest(metrics.registry).decode()
    assert 'controller_runtime_reconcile_total{controller="unit",result="success"}' in text
    assert 'controller_runtime_terminal_reconcile_errors_total{controller="unit"} 1.0' in text
    assert 'workqueue_retries_total{controller="unit",name="unit"}' in text


async def test_same_key_never_concurrent(controller: tuple[Controller, Scripted, EngineMetrics]) -> None:
    ctl, rec, _ = controller
    for _ in range(200):
        ctl.queue.add(Request("ns", "ok"))
        ctl.queue.add(Request("ns", "other"))
        await asyncio.sleep(0)
    await settle(lambda: len(ctl.queue) == 0 and ctl.queue.processing == 0)
    assert not rec.overlap
    assert 1 <= rec.calls["ok"] < 200  # coalesced


def test_builder_shapes_watches() -> None:
    ctl = (Controller.for_(WIDGET, generation_changed).owns(CONFIGMAP)
           .watches(NODE, lambda o: [], labels_changed, label_selector="gpu=true").with_workers(3)
           .build(Scripted()))
    assert ctl.name == "widget" and ctl.workers == 3
    assert [(w.kind, w.mode) for w in ctl.watches] == [(WIDGET, "self"), (CONFIGMAP, "owner"), (NODE, "map")]
    assert ctl.watches[0].predicates == (generation_changed,)
    assert ctl.watches[2].label_selector == "gpu=true"
    with pytest.raises(ValueError):
        Controller.for_(WIDGET).with_workers(0)


def test_settings_validate() -> None:
    with pytest.raises(ValueError):
        LeaderElectionSettings(lease_duration=5, renew_deadline=10)
    assert ManagerSettings().leader_election.lease_duration == 15
    assert ManagerSettings.model_fields["http_port"].description  # documented


# -- leader election against an in-memory Lease with compare-and-swap

class LeaseAPI:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                      headers: Mapping[str, str] | None = None, body: bytes | None = None,
                      timeout: float | None = None) -> RawResponse:
        if self.down:
            raise error_from_response(503, b'{"message": "down"}')
        if method == "GET":
            if self.lease is None:
                return RawResponse(404, b'{"code": 404, "reason": "NotFound"}')
            return RawResponse(200, json.dumps(self.lease).encode())
        sent = json.loads(body or b"{}")
        if method == "POST":
            if self.lease is not None:
                return RawResponse(409, b'{"code": 409, "reason": "AlreadyExists"}')
        elif self.lease is None or sent["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return RawResponse(409, b'{"code": 409, "reason": "Conflict"}')
        self.rv += 1
        sent["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = sent
        return RawResponse(200, json.dumps(sent).encode())

    def stream(self, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError


def elector(api: LeaseAPI, identity: str) -> LeaderElector:
    # Seconds, not tenths: a 2-core CI box can stall the loop for half a second, and a renewal
    # missed by a stall would (rightly) make the leader step down.
    settings = LeaderElectionSettings(enabled=True, identity=identity, lease_duration=3.0, renew_deadline=2.0,
                                      retry_period=0.2)
    return LeaderElector(Client(api), settings)


async def test_leader_election_one_leader_then_takeover() -> None:
    api = LeaseAPI()
    a, b = elector(api, "a"), elector(api, "b")
    await asyncio.wait_for(a.acquire(), 2)
    hold_a = asyncio.create_task(a.hold())
    b_acquire = asyncio.create_task(b.acquire())
    await asyncio.sleep(4.0)  # longer than the lease: a keeps renewing, so b must still wait
    assert not b_acquire.done() and a.is_leader
    hold_a.cancel()  # a freezes without releasing
    loop = asyncio.get_running_loop()
    frozen_at = loop.time()
    await asyncio.wait_for(b_acquire, 8)
    assert loop.time() - frozen_at >= 2.7  # b waited out the lease
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "b"
    assert api.lease["spec"]["leaseTransitions"] == 1


async def test_leader_steps_down_when_renewals_fail() -> None:
    api = LeaseAPI()
    a = elector(api, "a")
    await a.acquire()
    hold = asyncio.create_task(a.hold())
    await asyncio.sleep(0.3)
    assert not hold.done()
    api.down = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(hold, 5)
    # Stepped down within the renew deadline (2 s), before anyone could take over (3 s).
    assert loop.time() - start < 3.0
    assert not a.is_leader


class _StoppedWhileWaiting(LeaseAPI):
    """The process is stopped (SIGSTOP) after a renewal is sent, with its answer unread, for longer
    than the lease: the clock moves on while the write is in flight."""

    def __init__(self, clock: FakeClock, stop_for: float) -> None:
        super().__init__()
        self.clock, self.stop_for, self.stop_next_write = clock, stop_for, False

    async def request(self, method: str, path: str, **kwargs: Any) -> RawResponse:
        response = await super().request(method, path, **kwargs)
        if method == "PUT" and self.stop_next_write:
            self.stop_next_write = False
            self.clock.advance(self.stop_for)
        return response


async def test_a_renewal_answered_after_a_long_stop_does_not_extend_the_lease() -> None:
    """The renewal succeeded at the apiserver before the stop, so a standby's wait began then: the
    resumed leader must count its lease from the send, and fence its writes at once."""
    clock = FakeClock()
    api = _StoppedWhileWaiting(clock, stop_for=20.0)
    settings = LeaderElectionSettings(enabled=True, identity="a", lease_duration=15.0, renew_deadline=10.0,
                                      retry_period=2.0)
    a = LeaderElector(Client(api), settings, clock=clock)
    await a.acquire()  # creates the Lease
    assert await a.try_acquire_or_renew(timeout=1.0)  # a plain renewal
    assert not a.lease_may_be_lost()
    api.stop_next_write = True
    assert await a.try_acquire_or_renew(timeout=1.0)  # succeeded at the server; read 20 s later
    assert a.lease_may_be_lost(), "a renewal read after the deadline must not count as fresh"


async def test_release_hands_lease_back() -> None:
    api = LeaseAPI()
    a, b = elector(api, "a"), elector(api, "b")
    await a.acquire()
    await a.release()
    assert api.lease is not None and not api.lease["spec"]["holderIdentity"]
    await asyncio.wait_for(b.acquire(), 1.5)  # no need to wait out the lease (3 s)


# -- the manager, on the quiet fake API server

async def test_manager_probes_metrics_and_stop() -> None:
    import aiohttp

    from kaito_core.engine import Manager

    settings = ManagerSettings(http_port=0, bind_address="127.0.0.1", handle_signals=False)
    manager = Manager(Client(quiet_transport(), retry=RetryPolicy(attempts=1)), settings)
    rec = Scripted()
    manager.add(Controller.for_(WIDGET).owns(CONFIGMAP).build(rec))
    with pytest.raises(ValueError):
        manager.add(Controller.for_(WIDGET).build(rec))  # duplicate name
    ran: list[str] = []

    async def side_job() -> None:
        ran.append("started")
        await asyncio.Event().wait()

    manager.add_runnable(side_job, needs_leader=True)
    task = asyncio.create_task(manager.run())
    await settle(lambda: manager.ready and ran == ["started"])
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{manager.http_port}"
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/readyz?verbose") as resp:
            assert resp.status == 200 and "[+]cache-sync ok" in await resp.text()
        manager.controllers[0].queue.add(Request("ns", "ok"))
        await settle(lambda: rec.calls.get("ok") == 1)
        # The counter moves when the reconcile returns, a moment after it was called: poll.
        success = 'controller_runtime_reconcile_total{controller="widget",result="success"} 1.0'
        text = ""
        for _ in range(200):
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            if success in text:
                break
            await asyncio.sleep(0.02)
    assert success in text
    assert "workqueue_depth" in text and "controller_runtime_max_concurrent_reconciles" in text
    assert "workqueue_unfinished_work_seconds" in text and "workqueue_longest_running_processor_seconds" in text
    assert len(manager.cache.informers) == 2  # the Widget and ConfigMap informers, shared
    manager.stop()
    await asyncio.wait_for(task, 5)
    assert not manager.ready


async def test_two_managers_in_one_process_do_not_clash() -> None:
    from kaito_core.engine import Manager

    settings = ManagerSettings(http_port=None, handle_signals=False)
    first = Manager(Client(quiet_transport()), settings)
    second = Manager(Client(quiet_transport()), settings)
    first.add(Controller.for_(WIDGET).build(Scripted()))
    second.add(Controller.for_(WIDGET).build(Scripted()))  # same metric names, separate registries
    assert first.metrics.registry is not second.metrics.registry


async def test_reconcile_logs_carry_key_and_reconcile_id(
        controller: tuple[Controller, Scripted, EngineMetrics]) -> None:
    from structlog.testing import capture_logs

    ctl, rec, _ = controller
    with capture_logs() as logs:
        ctl.queue.add(Request("ns", "terminal"))
        await settle(lambda: rec.calls.get("terminal") == 1 and "terminal" not in rec.active)
        await asyncio.sleep(0.01)
    entries = [e for e in logs if e.get("event", "").startswith("reconcile failed")]
    assert entries, logs
    entry = entries[0]
    assert entry["controller"] == "unit" and entry["namespace"] == "ns" and entry["name"] == "terminal"
    assert len(entry["reconcile_id"]) == 12 and entry["log_level"] == "error"
