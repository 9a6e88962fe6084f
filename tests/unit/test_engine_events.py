"""The event correlator (client-go's dedupe, aggregation, spam filter) and which status changes deserve an Event."""

from __future__ import annotations

from typing import Any

from kaito_core.controllers.workspace.reconciler import _WARNING_REASONS
from kaito_core.controllers.workspace.status import status_events
from kaito_core.engine.events import COMBINED_PREFIX, EventCorrelator

OBJ = {"kind": "Workspace", "namespace": "ns", "name": "ws", "uid": "u1", "resourceVersion": "1"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def correlator(clock: Clock, **kwargs: Any) -> EventCorrelator:
    return EventCorrelator(clock=clock, now_iso=lambda: f"t{clock.t:.0f}", **kwargs)


def test_repeats_fold_into_one_event_with_a_count() -> None:
    clock = Clock()
    c = correlator(clock)
    first = c.observe(OBJ, "Warning", "Broken", "the same message")
    assert first is not None
    for _ in range(4):
        clock.t += 1
        again = c.observe({**OBJ, "resourceVersion": "2"}, "Warning", "Broken", "the same message")
        assert again is not None and again[1] is first[1]  # the same Event object, not a new one
    series = first[1]
    assert series.count == 5 and series.first == "t1000" and series.last == "t1004"
    assert series.involved["resourceVersion"] == "2"
    assert series.dirty  # nothing written yet: one write will carry all five
    other = c.observe(OBJ, "Warning", "Broken", "another message")
    assert other is not None and other[1] is not series and other[1].count == 1


def test_a_repeat_after_the_window_is_a_new_event() -> None:
    clock = Clock()
    c = correlator(clock, window=60)
    first = c.observe(OBJ, "Normal", "Ready", "serving")
    clock.t += 61
    later = c.observe(OBJ, "Normal", "Ready", "serving")
    assert first is not None and later is not None and later[1] is not first[1] and later[1].count == 1


def test_many_similar_messages_are_combined_into_one_event() -> None:
    clock = Clock()
    c = correlator(clock, max_similar=3)
    seen = [c.observe(OBJ, "Warning", "Failed", f"pod p-{i} crashed") for i in range(6)]
    assert all(s is not None for s in seen)
    series = {id(s[1]) for s in seen if s is not None}
    assert len(series) == 3  # two on their own, then one combined series for the rest
    combined = seen[-1]
    assert combined is not None
    assert combined[1].message == COMBINED_PREFIX + "pod p-5 crashed" and combined[1].count == 4


def test_a_storm_of_normal_events_is_filtered_but_warnings_always_pass() -> None:
    clock = Clock()
    c = correlator(clock, burst=5, refill_seconds=10)
    normals = [c.observe(OBJ, "Normal", f"Step{i}", "m") for i in range(8)]
    assert sum(s is not None for s in normals) == 5 and c.filtered == 3
    assert all(c.observe(OBJ, "Warning", f"Bad{i}", "m") is not None for i in range(20))
    clock.t += 10  # one token back
    assert c.observe(OBJ, "Normal", "Late", "m") is not None
    assert c.observe(OBJ, "Normal", "Later", "m") is None
    # Another object has its own bucket.
    assert c.observe({**OBJ, "name": "other", "uid": "u2"}, "Normal", "Step0", "m") is not None


def cond(type_: str, status: str, reason: str, message: str = "m") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def status(*conds: dict[str, Any]) -> dict[str, Any]:
    return {"conditions": list(conds)}


def test_the_happy_path_has_one_event_per_step() -> None:
    waiting = status(cond("ResourceReady", "False", "ProvisioningNodes"),
                     cond("InferenceReady", "False", "WaitingForResource"),
                     cond("WorkspaceSucceeded", "False", "WaitingForResource"),
                     cond("WorkspaceReady", "False", "Pending"))
    assert status_events(None, waiting, warnings=_WARNING_REASONS) == []  # waiting: the conditions say it
    deploying = status(cond("ResourceReady", "True", "NodesReady", "1 GPU node(s) ready: n0"),
                       cond("InferenceReady", "False", "Deploying"), cond("WorkspaceSucceeded", "False", "Deploying"),
                       cond("WorkspaceReady", "False", "Pending"))
    (nodes,) = status_events(waiting, deploying, warnings=_WARNING_REASONS)
    assert (nodes.type, nodes.reason) == ("Normal", "NodesReady") and "n0" in nodes.message
    ready = status(cond("ResourceReady", "True", "NodesReady"), cond("InferenceReady", "True", "InferenceReady"),
                   cond("WorkspaceSucceeded", "True", "InferenceReady"), cond("WorkspaceReady", "True", "Ready"))
    (serving,) = status_events(deploying, ready, warnings=_WARNING_REASONS)
    assert serving.reason == "InferenceReady"
    # Nodes the user brought were ready before the Workspace: no "nodes ready" news.
    assert [e.reason for e in status_events(None, deploying, warnings=_WARNING_REASONS)] == []


def test_a_failure_is_one_warning_and_a_lost_node_is_news() -> None:
    ok = status(cond("ResourceReady", "True", "NodesReady"), cond("InferenceReady", "True", "InferenceReady"),
                cond("WorkspaceSucceeded", "True", "InferenceReady"), cond("WorkspaceReady", "True", "Ready"))
    crash = "CrashLoopBackOff: pod p: container c is CrashLoopBackOff"
    failed = status(cond("ResourceReady", "True", "NodesReady"),
                    cond("InferenceReady", "False", "InferenceFailed", crash),
                    cond("WorkspaceSucceeded", "False", "InferenceFailed", crash),
                    cond("WorkspaceReady", "False", "Failed", crash))
    (warning,) = status_events(ok, failed, warnings=_WARNING_REASONS)  # not three for the same fact
    assert (warning.type, warning.reason) == ("Warning", "InferenceFailed") and crash in warning.message
    lost = status(cond("ResourceReady", "False", "WaitingForNodes", "node n0 is not Ready yet"),
                  *ok["conditions"][1:])
    (news,) = status_events(ok, lost, warnings=_WARNING_REASONS)
    assert (news.type, news.reason) == ("Normal", "WaitingForNodes") and "n0" in news.message
    invalid = status(cond("WorkspaceReady", "False", "ValidationFailed", "resource.count: too big"))
    assert [(e.type, e.reason) for e in status_events(None, invalid, warnings=_WARNING_REASONS)] == [
        ("Warning", "ValidationFailed")]
