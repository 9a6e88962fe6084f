"""Engine benchmarks: queue throughput, informer memory per object, reconcile latency.

    python benchmarks/bench_engine.py [--objects 10000] [--widgets 1000] [--queue-items 200000]

Starts its own light control plane (etcd + kube-apiserver), writes
benchmarks/results/engine.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the sample reconciler lives with the tests

from engine_support import (  # noqa: E402
    WIDGET,
    SampleReconciler,
    eventually,
    install_widget_crd,
    make_settings,
    sample_controller,
    widget,
)

from kaito_core.engine import (  # noqa: E402
    CONFIGMAP,
    Client,
    Informer,
    ItemExponentialFailureRateLimiter,
    Manager,
    RetryPolicy,
    WorkQueue,
)
from kaito_core.testing import ControlPlane, ControlPlaneMode  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_queue(items: int) -> dict[str, Any]:
    """Distinct keys through add -> get -> done, single producer and 4 concurrent workers."""
    queue: WorkQueue[str] = WorkQueue("bench", rate_limiter=ItemExponentialFailureRateLimiter())
    keys = [f"ns/object-{i}" for i in range(items)]
    start = time.perf_counter()
    for key in keys:
        queue.add(key)
    added = time.perf_counter()
    for _ in range(items):
        key = await queue.get()
        queue.done(key)
    drained = time.perf_counter()
    serial = {"adds_per_s": items / (added - start), "gets_per_s": items / (drained - added),
              "adds_plus_gets_per_s": 2 * items / (drained - start)}

    # Concurrent: producer and 4 workers interleaved, with duplicate adds (dedup).
    queue = WorkQueue("bench2", rate_limiter=ItemExponentialFailureRateLimiter())
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                key = await queue.get()
            except Exception:
                return
            queue.done(key)
            done += 1

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    start = time.perf_counter()
    for i, key in enumerate(keys):
        queue.add(key)
        if i % 100 == 0:
            await asyncio.sleep(0)
    while len(queue) or queue.processing:  # noqa: ASYNC110 - polling a condition is the point here
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    await queue.shutdown_with_drain(1)
    await asyncio.gather(*workers)
    return {"items": items, "serial": serial,
            "concurrent_4_workers": {"adds_plus_gets_per_s": (items + done) / elapsed, "processed": done}}


async def create_configmaps(client: Client, namespace: str, count: int) -> None:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": f"cm-{i:05d}", "namespace": namespace,
                                              "labels": {"app": "bench", "shard": str(i % 16)},
                                              "annotations": {"bench.kaito.sh/index": str(i)}},
                                 "data": {"model": "falcon-7b", "replicas": str(i % 5), "note": "x" * 64}})

    await asyncio.gather(*(one(i) for i in range(count)))


async def informer_memory(client: Client, namespace: str, count: int, strip: bool) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    from kaito_core.engine.informer import strip_managed_fields

    informer = Informer(client, CONFIGMAP, namespace=namespace, transform=strip_managed_fields if strip else None)
    start = time.perf_counter()
    informer.start()
    assert await informer.wait_for_sync(300)
    sync_s = time.perf_counter() - start
    await informer.stop()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(informer.store) == count, len(informer.store)
    per_object = (after - before) / count
    del informer
    gc.collect()
    return {"objects": count, "bytes_per_object": round(per_object), "sync_seconds_traced": round(sync_s, 2)}


async def reconcile_latency(plane: ControlPlane, count: int) -> dict[str, Any]:
    ns = "bench-widgets"
    manager = await Manager.from_kubeconfig(plane.kubeconfig, make_settings(ns, http_port=None))
    client = manager.client
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await install_widget_crd(client)
    # The first write of a freshly established CRD is slow (~2 s, server side): keep it out of the figures.
    await client.create(widget("warmup", "default", "0"))
    await client.delete(WIDGET, "warmup", "default")
    created_at: dict[str, float] = {}
    done_at: dict[str, float] = {}
    reconciler: SampleReconciler = sample_controller(manager, workers=8)
    original = reconciler.reconcile

    async def timed(request: Any) -> Any:
        result = await original(request)
        if request.name not in done_at and reconciler.applies[str(request)] > 0:
            done_at[request.name] = time.perf_counter()
        return result

    reconciler.reconcile = timed  # type: ignore[method-assign]
    task = asyncio.create_task(manager.run())
    await eventually(lambda: manager.ready, 60)

    # Burst: all objects created at once (64 in flight); latency = create sent -> child applied.
    sem = asyncio.Semaphore(64)

    async def create(i: int) -> None:
        name = f"w{i:04d}"
        async with sem:
            created_at[name] = time.perf_counter()
            await client.create(widget(name, ns, str(i)))

    start = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(count)))
    await eventually(lambda: len(done_at) == count, 600, interval=0.1)
    converge = time.perf_counter() - start
    burst = [done_at[n] - created_at[n] for n in created_at]

    # Steady state: one change at a time; latency = patch sent -> child updated by the reconciler.
    single: list[float] = []
    for i in range(min(100, count)):
        name = f"w{i:04d}"
        key = f"{ns}/{name}"
        applies = reconciler.applies[key]
        t0 = time.perf_counter()
        await client.patch(WIDGET, name, {"spec": {"value": f"changed-{i}"}}, ns)
        while reconciler.applies[key] == applies:  # noqa: ASYNC110 - polling a condition is the point here
            await asyncio.sleep(0.0005)
        single.append(time.perf_counter() - t0)

    hist = manager.metrics.reconcile_time.labels("widget")
    manager.stop()
    await task
    await client.close()
    return {
        "objects": count,
        "workers": 8,
        "burst_converge_seconds": round(converge, 2),
        "burst_latency_ms": {"p50": round(pct(burst, 0.5) * 1000, 1), "p99": round(pct(burst, 0.99) * 1000, 1)},
        "single_change_latency_ms": {"p50": round(pct(single, 0.5) * 1000, 1),
                                     "p99": round(pct(single, 0.99) * 1000, 1),
                                     "mean": round(statistics.mean(single) * 1000, 1)},
        "reconciles_total": sum(reconciler.reconciles.values()),
        "reconcile_time_sum_s": round(_hist_sum(hist), 2),
    }


def _hist_sum(child: Any) -> float:
    for metric in child.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                return float(sample.value)
    return 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["queue"] = await bench_queue(args.queue_items)
    print("queue done", flush=True)
    with ControlPlane(mode=ControlPlaneMode.LIGHT) as plane:
        manager_client = (await Manager.from_kubeconfig(plane.kubeconfig, make_settings(None))).client
        manager_client.retry = RetryPolicy(attempts=8)
        await manager_client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-cm"}})
        t0 = time.perf_counter()
        await create_configmaps(manager_client, "bench-cm", args.objects)
        results["create_configmaps_per_s"] = round(args.objects / (time.perf_counter() - t0))
        print("configmaps created", flush=True)
        results["informer_memory_stripped"] = await informer_memory(manager_client, "bench-cm", args.objects, True)
        results["informer_memory_with_managed_fields"] = await informer_memory(manager_client, "bench-cm",
                                                                               args.objects, False)
        start = time.perf_counter()
        listed = await manager_client.list(CONFIGMAP, "bench-cm")
        results["list_seconds_untraced"] = round(time.perf_counter() - start, 2)
        results["json_bytes_per_object"] = round(len(json.dumps(listed.items)) / len(listed.items))
        del listed
        print("informer done", flush=True)
        results["reconcile"] = await reconcile_latency(plane, args.widgets)
        await manager_client.close()
    return results


def table(results: dict[str, Any]) -> str:
    q = results["queue"]
    m, mf = results["informer_memory_stripped"], results["informer_memory_with_managed_fields"]
    r = results["reconcile"]
    rows = [
        (f"queue add+get /s (serial, {q['items']} keys)", f"{q['serial']['adds_plus_gets_per_s']:,.0f}"),
        ("queue adds /s", f"{q['serial']['adds_per_s']:,.0f}"),
        ("queue gets+done /s", f"{q['serial']['gets_per_s']:,.0f}"),
        ("queue add+get /s (4 workers)", f"{q['concurrent_4_workers']['adds_plus_gets_per_s']:,.0f}"),
        (f"informer bytes/object ({m['objects']} ConfigMaps, managedFields stripped)", f"{m['bytes_per_object']:,}"),
        ("informer bytes/object (managedFields kept)", f"{mf['bytes_per_object']:,}"),
        ("JSON bytes/object on the wire (LIST)", f"{results['json_bytes_per_object']:,}"),
        ("LIST of all objects, seconds", f"{results['list_seconds_untraced']}"),
        (f"reconcile burst {r['objects']} objects: converge s", f"{r['burst_converge_seconds']}"),
        ("reconcile burst latency p50 / p99 ms", f"{r['burst_latency_ms']['p50']} / {r['burst_latency_ms']['p99']}"),
        ("single change -> reconciled p50 / p99 ms",
         f"{r['single_change_latency_ms']['p50']} / {r['single_change_latency_ms']['p99']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v:>14}" for k, v in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000, help="ConfigMaps for the informer memory test")
    parser.add_argument("--widgets", type=int, default=1_000, help="objects for the reconcile latency test")
    parser.add_argument("--queue-items", type=int, default=200_000, help="keys for the queue throughput test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine.json")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
