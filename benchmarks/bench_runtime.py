"""Inference server overhead: the same tiny model called directly vs through the HTTP server.

One run, CPU, a tiny random-weight Phi-3 (hidden 64, 2 layers) built on the fly, greedy decoding of a
fixed number of tokens. Reports requests/s and latency percentiles for

* ``direct``            — ``await backend.generate(...)`` in-process (no HTTP, no JSON);
* ``http /v1/completions`` and ``http /chat`` — one keep-alive client over real HTTP (uvicorn, loopback);
* ``http stream``       — ``/v1/chat/completions`` with ``stream: true`` (time to first token, total);
* ``http c=4``          — four concurrent clients (the transformers backend serialises generations).

Writes ``benchmarks/results/runtime.json`` and prints a table.

    .venv/bin/python benchmarks/bench_runtime.py [--requests 100] [--max-new-tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).parent / "results" / "runtime.json"
PROMPT = "What is the capital of France?"


def summarize(name: str, latencies: list[float], wall: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 100
    return {
        "name": name,
        "requests": len(lat),
        "requests_per_s": round(len(lat) / wall, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 3),
        "p50_ms": round(q[49] * 1000, 3),
        "p95_ms": round(q[94] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        **(extra or {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()

    import httpx
    import torch
    from kaito_presets.runtime.inference.base import SamplingParams, create_backend
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.tiny import build_tiny_model

    from kaito_core.testing.asgi import ServerThread

    torch.set_num_threads(args.threads)
    n, k = args.requests, args.max_new_tokens
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        overrides = {
            "model": str(model),
            "served_model_name": "tiny",
            "adapters_dir": str(Path(tmp) / "none"),
            "device_map": "cpu",
            "dtype": "float32",
            "max_model_len": 256,
        }
        cfg = load_config(None, overrides)

        # ---- direct: the backend, no server
        backend = create_backend(cfg)
        backend.load()

        async def direct() -> tuple[list[float], float, int]:
            params = SamplingParams(max_new_tokens=k, temperature=0.0)
            for _ in range(5):  # warm-up
                await backend.generate("tiny", PROMPT, params, add_special_tokens=True)
            lat, tokens = [], 0
            t0 = time.perf_counter()
            for _ in range(n):
                s = time.perf_counter()
                c = await backend.generate("tiny", PROMPT, params, add_special_tokens=True)
                lat.append(time.perf_counter() - s)
                tokens += c.completion_tokens
            return lat, time.perf_counter() - t0, tokens

        lat, wall, tokens = asyncio.run(direct())
        results.append(summarize("direct backend.generate", lat, wall, {"tokens_per_request": tokens / n}))

        # ---- through the server
        app = create_app(create_backend(cfg), cfg)
        with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            deadline = time.monotonic() + 120
            while client.get("/health").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("server never became healthy")
                time.sleep(0.05)

            def http_run(path: str, body: dict[str, Any], count: int) -> tuple[list[float], float, int]:
                for _ in range(5):
                    client.post(path, json=body).raise_for_status()
                lat, tokens = [], 0
                t0 = time.perf_counter()
                for _ in range(count):
                    s = time.perf_counter()
                    r = client.post(path, json=body)
                    lat.append(time.perf_counter() - s)
                    r.raise_for_status()
                    tokens += r.json()["usage"]["completion_tokens"]
                return lat, time.perf_counter() - t0, tokens

            comp = {"prompt": PROMPT, "max_tokens": k, "temperature": 0}
            lat, wall, tokens = http_run("/v1/completions", comp, n)
            results.append(summarize("http /v1/completions", lat, wall, {"tokens_per_request": tokens / n}))
            chat = {"prompt": PROMPT, "generate_kwargs": {"max_new_tokens": k, "temperature": 0}}
            lat, wall, tokens = http_run("/chat", chat, n)
            results.append(summarize("http /chat", lat, wall, {"tokens_per_request": tokens / n}))

            # streaming: time to first token and total
            body = {
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": k,
                "temperature": 0,
                "stream": True,
            }
            ttft, total = [], []
            t0 = time.perf_counter()
            for _ in range(n):
                s = time.perf_counter()
                first = None
                with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    for line in r.iter_lines():
                        if (
                            first is None
                            and line.startswith("data: ")
                            and '"content": "' in line
                            and '"role"' not in line
                        ):
                            first = time.perf_counter() - s
                total.append(time.perf_counter() - s)
                ttft.append(first if first is not None else total[-1])
            wall = time.perf_counter() - t0
            results.append(
                summarize(
                    "http stream /v1/chat/completions",
                    total,
                    wall,
                    {"ttft_mean_ms": round(statistics.fmean(ttft) * 1000, 3)},
                )
            )

            # four concurrent clients
            lats: list[float] = []
            lock = threading.Lock()

            def worker(count: int) -> None:
                with httpx.Client(base_url=srv.url, timeout=60) as c:
                    for _ in range(count):
                        s = time.perf_counter()
                        c.post("/v1/completions", json=comp).raise_for_status()
                        with lock:
                            lats.append(time.perf_counter() - s)

            threads = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results.append(summarize("http /v1/completions c=4", lats, time.perf_counter() - t0))

        # direct again, after the server runs: brackets any drift of the shared machine's load
        lat, wall, tokens = asyncio.run(direct())
        results.append(summarize("direct backend.generate (again)", lat, wall, {"tokens_per_request": tokens / n}))

    direct_mean = statistics.fmean([results[0]["mean_ms"], results[-1]["mean_ms"]])
    direct_p50 = statistics.fmean([results[0]["p50_ms"], results[-1]["p50_ms"]])
    for r in results:
        r["overhead_vs_direct_ms"] = round(r["mean_ms"] - direct_mean, 3)
        r["p50_overhead_vs_direct_ms"] = round(r["p50_ms"] - direct_p50, 3)
    out = {
        "benchmark": "runtime server overhead",
        "model": "tiny random Phi-3 (hidden 64, 2 layers), CPU, float32, greedy",
        "max_new_tokens": k,
        "requests_per_case": n,
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    header = (
        f"{'case':36} {'req/s':>8} {'mean ms':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'Δmean':>8} {'Δp50':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:36} {r['requests_per_s']:8.1f} {r['mean_ms']:9.2f} {r['p50_ms']:8.2f} "
            f"{r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['overhead_vs_direct_ms']:+8.2f} "
            f"{r['p50_overhead_vs_direct_ms']:+8.2f}"
        )
    stream = next(r for r in results if "stream" in r["name"])
    print(f"stream time to first token: {stream['ttft_mean_ms']:.2f} ms mean")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
