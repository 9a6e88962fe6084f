"""Prometheus metrics of the inference server (one registry per app, exposed at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kaito_inference_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "kaito_inference_prompt_tokens", "Prompt (input) tokens processed", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "kaito_inference_generation_tokens", "Generated (output) tokens", ["model"], registry=r
        )
        self.ttft = Histogram(
            "kaito_inference_time_to_first_token_seconds",
            "Time from request to the first generated token",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "kaito_inference_request_latency_seconds",
            "End-to-end generation latency (streams included)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge("kaito_inference_requests_running", "Generations in progress", registry=r)
        self.pending = Gauge(
            "kaito_inference_requests_pending",
            "Generations admitted (running or waiting for the model); at max_pending_requests one more is a 429",
            registry=r,
        )
        self.loaded = Gauge("kaito_inference_model_loaded", "1 once the model is loaded and serving", registry=r)
