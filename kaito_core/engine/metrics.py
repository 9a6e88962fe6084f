"""Prometheus metrics, named as controller-runtime names them so dashboards carry over.

Each Manager owns a ``CollectorRegistry`` (not the global one), so several
managers in one process (tests, or two operators embedded together) never clash.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ControllerMetrics", "EngineMetrics", "QueueMetricsAdapter"]

_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7,
                      0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20,
                      25, 30, 40, 50, 60)
_QUEUE_BUCKETS = tuple(10.0 ** exp for exp in range(-8, 4))  # 10ns .. 1000s, like client-go


def _safe(func: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        try:
            return func()
        except RuntimeError:  # scraped outside the event loop: the loop clock is unavailable
            return 0.0

    return read


class EngineMetrics:
    """Every metric the engine exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter("controller_runtime_reconcile_total",
                                       "Total number of reconciliations per controller",
                                       ["controller", "result"], registry=r)
        self.reconcile_errors = Counter("controller_runtime_reconcile_errors_total",
                                        "Total number of reconciliation errors per controller",
                                        ["controller"], registry=r)
        self.terminal_errors = Counter("controller_runtime_terminal_reconcile_errors_total",
                                       "Total number of terminal reconciliation errors per controller",
                                       ["controller"], registry=r)
        self.reconcile_time = Histogram("controller_runtime_reconcile_time_seconds",
                                        "Length of time per reconciliation per controller",
                                        ["controller"], buckets=_RECONCILE_BUCKETS, registry=r)
        self.max_concurrent = Gauge("controller_runtime_max_concurrent_reconciles",
                                    "Maximum number of concurrent reconciles per controller",
                                    ["controller"], registry=r)
        self.active_workers = Gauge("controller_runtime_active_workers",
                                    "Number of currently used workers per controller", ["controller"], registry=r)
        self.queue_depth = Gauge("workqueue_depth", "Current depth of workqueue", ["name", "controller"],
                                 registry=r)
        self.queue_adds = Counter("workqueue_adds_total", "Total number of adds handled by workqueue",
                                  ["name", "controller"], registry=r)
        self.queue_latency = Histogram("workqueue_queue_duration_seconds",
                                       "How long in seconds an item stays in workqueue before being requested",
                                       ["name", "controller"], buckets=_QUEUE_BUCKETS, registry=r)
        self.work_duration = Histogram("workqueue_work_duration_seconds",
                                       "How long in seconds processing an item from workqueue takes",
                                       ["name", "controller"], buckets=_QUEUE_BUCKETS, registry=r)
        self.queue_retries = Counter("workqueue_retries_total", "Total number of retries handled by workqueue",
                                     ["name", "controller"], registry=r)
        self.unfinished_work = Gauge("workqueue_unfinished_work_seconds",
                                     "How many seconds of work has been done that is in progress and hasn't "
                                     "been observed by work_duration.", ["name", "controller"], registry=r)
        self.longest_running = Gauge("workqueue_longest_running_processor_seconds",
                                     "How many seconds has the longest running processor for workqueue been "
                                     "running.", ["name", "controller"], registry=r)
        self.leader_status = Gauge("leader_election_master_status",
                                   "Gauge of if the reporting system is master of the relevant lease, "
                                   "0 indicates backup, 1 indicates master. 'name' is the string used to "
                                   "identify the lease.", ["name"], registry=r)

    def for_controller(self, name: str) -> ControllerMetrics:
        return ControllerMetrics(self, name)


class ControllerMetrics:
    """The engine metrics with one controller's labels already applied (cheap in the hot path)."""

    def __init__(self, metrics: EngineMetrics, name: str):
        self.name = name
        self.success = metrics.reconcile_total.labels(name, "success")
        self.error = metrics.reconcile_total.labels(name, "error")
        self.requeue = metrics.reconcile_total.labels(name, "requeue")
        self.requeue_after = metrics.reconcile_total.labels(name, "requeue_after")
        self.errors = metrics.reconcile_errors.labels(name)
        self.terminal = metrics.terminal_errors.labels(name)
        self.time = metrics.reconcile_time.labels(name)
        self.max_concurrent = metrics.max_concurrent.labels(name)
        self.active_workers = metrics.active_workers.labels(name)
        self.queue = QueueMetricsAdapter(metrics, name)


class QueueMetricsAdapter:
    """Implements the queue's metrics hook with the workqueue_* series."""

    def __init__(self, metrics: EngineMetrics, name: str):
        self._depth = metrics.queue_depth.labels(name, name)
        self._adds = metrics.queue_adds.labels(name, name)
        self._latency = metrics.queue_latency.labels(name, name)
        self._work = metrics.work_duration.labels(name, name)
        self._retries = metrics.queue_retries.labels(name, name)
        self._unfinished = metrics.unfinished_work.labels(name, name)
        self._longest = metrics.longest_running.labels(name, name)

    def watch_queue(self, unfinished: Callable[[], float], longest: Callable[[], float]) -> None:
        """Computed at scrape time from the queue itself (a stuck reconcile shows up at once)."""
        self._unfinished.set_function(_safe(unfinished))
        self._longest.set_function(_safe(longest))

    def added(self) -> None:
        self._adds.inc()

    def got(self, queued_for: float) -> None:
        self._latency.observe(queued_for)

    def done(self, worked_for: float) -> None:
        self._work.observe(worked_for)

    def retried(self) -> None:
        self._retries.inc()

    def depth(self, depth: int) -> None:
        self._depth.set(depth)
