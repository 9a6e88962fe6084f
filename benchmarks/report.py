"""One report from every benchmark result under benchmarks/results/.

    python benchmarks/report.py [--results benchmarks/results] [--markdown]

Reads what is there (any of scale.json, engine.json, runtime.json, reliability.json) and prints one
table per benchmark; ``--markdown`` prints them as Markdown tables (what docs/proof.md carries).
Missing files are listed, not an error: run ``nox -s bench`` (or a single benchmarks/bench_*.py) first.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

Row = tuple[str, ...]


def _get(data: Any, *path: str | int, default: Any = "-") -> Any:
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def scale_table(data: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    sizes = data.get("sizes") or []
    head: Row = ("figure", *(f"N={s['workspaces']}" for s in sizes))
    figures: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("all WorkspaceReady (s)", lambda s: _get(s, "create", "all_ready_s")),
        ("time to ready p50 (s)", lambda s: _get(s, "create", "time_to_ready_p50_s")),
        ("time to ready p99 (s)", lambda s: _get(s, "create", "time_to_ready_p99_s")),
        ("reconciles / workspace", lambda s: _get(s, "create", "reconciles_per_workspace")),
        ("apiserver requests / workspace", lambda s: _get(s, "create", "apiserver_requests_per_workspace")),
        ("operator CPU s (up)", lambda s: _get(s, "create", "operator_cpu_s")),
        ("operator peak RSS (MiB)", lambda s: _get(s, "operator_peak_rss_mib")),
        ("delete: Workspaces, Machines, Nodes gone (s)",
         lambda s: _get(s, "delete", "workspaces_machines_nodes_gone_s")),
        ("delete: nothing left incl. workloads, pods (s)", lambda s: _get(s, "delete", "nothing_left_s")),
        ("reconciles / workspace (delete)", lambda s: _get(s, "delete", "reconciles_per_workspace")),
        ("apiserver requests / workspace (delete)", lambda s: _get(s, "delete", "apiserver_requests_per_workspace")),
        ("duplicates", lambda s: _get(s, "duplicates")),
    ]
    rows = [head] + [(name, *(_num(get(s), 2) for s in sizes)) for name, get in figures]
    m = data.get("machine") or {}
    title = (f"Scale ({data.get('date', '?')}; {m.get('cpus', '?')} CPUs, {m.get('memory_gib', '?')} GiB, "
             f"Python {m.get('python', '?')})")
    tables = [(title, rows)]
    growth = data.get("growth") or {}
    if growth and sizes:
        g_rows: list[Row] = [("figure", f"N={sizes[0]['workspaces']}", f"N={sizes[-1]['workspaces']}",
                              "k (figure ~ N^k; 1 = linear)")]
        g_rows += [(name, _num(g.get("from"), 2), _num(g.get("to"), 2), str(g.get("exponent")))
                   for name, g in growth.items()]
        tables.append(("Scale: growth from the smallest to the largest N", g_rows))
    return tables


def engine_table(data: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    rows: list[Row] = [("figure", "value")]
    add = rows.append
    add(("queue add+get ops/s (serial)", _num(_get(data, "queue", "serial", "adds_plus_gets_per_s"), 0)))
    add(("queue add+get ops/s (4 workers)", _num(_get(data, "queue", "concurrent_4_workers",
                                                        "adds_plus_gets_per_s"), 0)))
    add(("informer bytes/object (managedFields stripped)",
         _num(_get(data, "informer_memory_stripped", "bytes_per_object"))))
    add(("informer bytes/object (with managedFields)",
         _num(_get(data, "informer_memory_with_managed_fields", "bytes_per_object"))))
    add(("single change -> reconcile latency p50 (ms)", _num(_get(data, "reconcile", "single_change_latency_ms",
                                                                   "p50"))))
    add(("single change -> reconcile latency p99 (ms)", _num(_get(data, "reconcile", "single_change_latency_ms",
                                                                   "p99"))))
    add((f"burst of {_get(data, 'reconcile', 'objects')} objects converged (s)",
         _num(_get(data, "reconcile", "burst_converge_seconds"))))
    return [(f"Engine ({data.get('date', '?')})", rows)]


def runtime_table(data: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    rows: list[Row] = [("case", "req/s", "p50 ms", "p99 ms", "overhead vs direct ms")]
    for r in data.get("results") or []:
        rows.append((str(r.get("name")), _num(r.get("requests_per_s")), _num(r.get("p50_ms")),
                     _num(r.get("p99_ms")), _num(r.get("overhead_vs_direct_ms"))))
    return [(f"Runtime ({data.get('model', '?')}; {data.get('machine', '?')})", rows)]


def reliability_table(data: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    rows: list[Row] = [("scenario", "runs", "kills survived", "faults injected", "objects created", "objects left",
                        "duplicates", "max convergence s", "result")]
    for r in data.get("rows") or []:
        rows.append((r["scenario"], str(r["runs"]), str(r["kills_survived"]), str(r["faults_injected"]),
                     str(r["objects_created"]), str(r["objects_left"]), str(r["duplicates"]),
                     f"{r['max_convergence_s']:.1f}", "pass" if r["passed"] else "FAIL"))
    return [(f"Reliability ({data.get('date', '?')})", rows)]


SOURCES: dict[str, Callable[[dict[str, Any]], list[tuple[str, list[Row]]]]] = {
    "scale.json": scale_table,
    "engine.json": engine_table,
    "runtime.json": runtime_table,
    "reliability.json": reliability_table,
}


def render(rows: list[Row], markdown: bool) -> str:
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
    out = []
    for j, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        out.append(("| " + " | ".join(cells) + " |") if markdown else " | ".join(cells))
        if j == 0:
            sep = ["-" * w for w in widths]
            out.append(("|" + "|".join(f"-{s}-" for s in sep) + "|") if markdown else "-|-".join(sep))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()
    missing = []
    for name, build in SOURCES.items():
        path = args.results / name
        if not path.exists():
            missing.append(name)
            continue
        for title, rows in build(json.loads(path.read_text())):
            print(f"### {title}\n" if args.markdown else f"== {title}")
            print(render(rows, args.markdown))
            print()
    others = sorted(p.name for p in args.results.glob("*.json") if p.name not in SOURCES) if args.results.exists() \
        else []
    if others:
        print(f"(other result files not summarised: {', '.join(others)})")
    if missing:
        print(f"(no results yet: {', '.join(missing)})")


if __name__ == "__main__":
    main()
