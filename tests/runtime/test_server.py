"""The inference server over real HTTP (uvicorn on a loopback port), transformers backend on CPU."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import serve, wait_healthy

pytestmark = pytest.mark.runtime

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = serve(tiny_model, tmp_path_factory.mktemp("no-adapters"))
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Any) -> Iterator[Any]:
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0


def sse_events(resp: Any) -> list[Any]:
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = []
    for line in resp.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        payload = line[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_chat_with_a_prompt_as_the_seed_curl_calls_it(client: Any) -> None:
    r = client.post("/chat", json={"prompt": "YOUR QUESTION HERE"}, headers={"accept": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["Result"], str) and body["Result"].startswith("YOUR QUESTION HERE")
    assert body["usage"]["completion_tokens"] >= 1


def test_chat_with_messages_and_generate_kwargs(client: Any) -> None:
    r = client.post(
        "/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "generate_kwargs": {"max_new_tokens": 5, **GREEDY}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 5
    # Kaito's clients also send the generation parameters at the top level.
    r = client.post("/chat", json={"prompt": "Tell me a joke", "max_length": 12, "temperature": 0.7, "top_p": 0.9})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] <= 12


def test_openai_chat_completions_stream_equals_non_stream(client: Any) -> None:
    req = {
        "model": "tiny-phi3",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12,
        **GREEDY,
    }
    r = client.post("/v1/chat/completions", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-phi3"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

    with client.stream(
        "POST", "/v1/chat/completions", json={**req, "stream": True, "stream_options": {"include_usage": True}}
    ) as s:
        assert s.status_code == 200
        events = sse_events(s)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == choice["message"]["content"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == [choice["finish_reason"]]
    assert chunks[-1]["usage"] == body["usage"]


def test_openai_completions_stream_and_not(client: Any) -> None:
    req = {"prompt": "The quick brown fox", "max_tokens": 8, **GREEDY}
    r = client.post("/v1/completions", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] <= 8
    with client.stream("POST", "/v1/completions", json={**req, "stream": True}) as s:
        events = sse_events(s)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == body["choices"][0]["text"]
    echo = client.post("/v1/completions", json={**req, "echo": True}).json()
    assert echo["choices"][0]["text"] == req["prompt"] + body["choices"][0]["text"]


def test_models(client: Any) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny-phi3"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/chat", {"prompt": ""}, 400, "empty_prompt"),
        ("/chat", {"prompt": "   "}, 400, "empty_prompt"),
        ("/chat", {}, 400, "empty_prompt"),
        ("/chat", {"messages": []}, 400, "empty_messages"),
        ("/chat", {"prompt": "hi", "model": "gpt-4"}, 404, "model_not_found"),
        ("/chat", {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 100000}}, 400, "max_tokens_exceeded"),
        ("/chat", {"prompt": "hi", "generate_kwargs": {"max_new_tokens": -3}}, 400, "invalid_generate_kwargs"),
        ("/chat", {"prompt": "hi", "generate_kwargs": {"temperature": "hot"}}, 400, "invalid_generate_kwargs"),
        ("/chat", {"prompt": "hi", "generate_kwargs": {"output_scores": True}}, 400, "invalid_generate_kwargs"),
        ("/chat", {"prompt": "hello " * 400}, 400, "context_length_exceeded"),
        ("/chat", {"prompt": 42}, 400, "invalid_request"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, 400, "empty_prompt"),
        ("/v1/chat/completions", {"messages": []}, 400, "empty_messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request"),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65},
            400,
            "max_tokens_exceeded",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "unsupported_n"),
        ("/v1/completions", {"prompt": ""}, 400, "empty_prompt"),
        ("/v1/completions", {"prompt": "hi " * 250, "max_tokens": 60}, 400, "context_length_exceeded"),
        ("/v1/completions", {"prompt": "hi", "temperature": 5}, 400, "invalid_request"),
        ("/nowhere", {}, 404, "not_found"),
    ],
)
def test_bad_requests_are_clear_4xx_json(client: Any, path: str, body: dict[str, Any], status: int, code: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert err["error"]["code"] == code and err["detail"] == err["error"]["message"]
    assert "Traceback" not in r.text


def test_malformed_json_is_400(client: Any) -> None:
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Traceback" not in r.text


def test_metrics_count_requests_and_tokens(client: Any) -> None:
    before = client.get("/metrics").text
    usages = []
    for _ in range(3):
        r = client.post("/chat", json={"prompt": "count me", "generate_kwargs": {"max_new_tokens": 4, **GREEDY}})
        usages.append(r.json()["usage"])
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            **GREEDY,
        },
    ) as s:
        stream_usage = sse_events(s)[-2]["usage"]
    client.post("/chat", json={"prompt": ""})
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("kaito_inference_requests_total", route="/chat", status="200") == 3
    assert delta("kaito_inference_requests_total", route="/chat", status="400") == 1
    assert delta("kaito_inference_requests_total", route="/v1/chat/completions", status="200") == 1
    assert delta("kaito_inference_prompt_tokens_total", model="tiny-phi3") == (
        sum(u["prompt_tokens"] for u in usages) + stream_usage["prompt_tokens"]
    )
    assert delta("kaito_inference_generation_tokens_total", model="tiny-phi3") == (
        sum(u["completion_tokens"] for u in usages) + stream_usage["completion_tokens"]
    )
    assert delta("kaito_inference_time_to_first_token_seconds_count", route="/chat") == 3
    assert delta("kaito_inference_time_to_first_token_seconds_count", route="/v1/chat/completions") == 1
    assert delta("kaito_inference_request_latency_seconds_count", route="/chat") == 3
    assert metric(after, "kaito_inference_model_loaded") == 1


def test_health_is_503_until_loaded_then_200(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.inference.transformers_backend import TransformersBackend

    from kaito_core.testing.asgi import ServerThread

    gate = threading.Event()

    class GatedBackend(TransformersBackend):
        def load(self) -> None:
            assert gate.wait(60), "test never opened the gate"
            super().load()

    cfg = load_config(None, {"model": str(tiny_model), "adapters_dir": str(tmp_path), "device_map": "cpu"})
    with ServerThread(create_app(GatedBackend(cfg), cfg)) as srv:
        for _ in range(3):
            r = httpx.get(f"{srv.url}/health")
            assert r.status_code == 503 and r.json()["status"] == "Loading"
            time.sleep(0.05)
        r = httpx.post(f"{srv.url}/chat", json={"prompt": "too early"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert "kaito_inference_model_loaded 0.0" in httpx.get(f"{srv.url}/metrics").text
        gate.set()
        wait_healthy(srv.url, timeout=60)
        assert httpx.get(f"{srv.url}/health").json() == {"status": "Healthy"}
        assert httpx.post(f"{srv.url}/chat", json={"prompt": "now"}).status_code == 200


def test_failed_load_reports_503_with_the_reason(tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import create_app

    from kaito_core.testing.asgi import ServerThread

    cfg = load_config(None, {"model": str(tmp_path / "missing"), "adapters_dir": str(tmp_path)})
    with ServerThread(create_app(create_backend(cfg), cfg)) as srv:
        deadline = time.monotonic() + 30
        while (body := httpx.get(f"{srv.url}/health").json())["status"] == "Loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body["status"] == "Failed" and "missing" in body["detail"]


def test_an_internal_error_is_a_500_without_traceback(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.inference.transformers_backend import TransformersBackend

    from kaito_core.testing.asgi import ServerThread

    class Broken(TransformersBackend):
        async def stream(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internal detail")
            yield  # pragma: no cover

    cfg = load_config(None, {"model": str(tiny_model), "adapters_dir": str(tmp_path), "device_map": "cpu"})
    with ServerThread(create_app(Broken(cfg), cfg)) as srv:
        wait_healthy(srv.url)
        r = httpx.post(f"{srv.url}/chat", json={"prompt": "boom"})
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
        assert "Traceback" not in r.text and "secret internal detail" not in r.text
        with httpx.stream(
            "POST",
            f"{srv.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "boom"}], "stream": True},
        ) as s:
            events = sse_events(s)
        assert events[-1] == "[DONE]" and "error" in events[-2]
        assert "secret internal detail" not in json.dumps(events)


def test_config_file_and_flags(tmp_path: Path) -> None:
    from kaito_presets.runtime.inference.config import load_config

    f = tmp_path / "inference_config.yaml"
    f.write_text(
        "max_probe_steps: 6\nserved_model_name: phi-3\nmax_new_tokens: 64\nvllm:\n  gpu-memory-utilization: 0.8\n"
        "transformers:\n  device_map: cpu\n"
    )
    cfg = load_config(f, {"max_new_tokens": 32, "port": None, "combination_type": "svd"})
    assert cfg.model_name == "phi-3" and cfg.max_new_tokens == 32
    assert cfg.vllm == {"gpu-memory-utilization": 0.8}
    assert cfg.transformers.device_map == "cpu" and cfg.transformers.combination_type == "svd"
    assert load_config(None, {"model": "/workspace/weights/"}).model_name == "weights"


def test_the_pod_command_line_serves(tiny_model: Path, tmp_path: Path) -> None:
    """``python -m kaito_presets.runtime.inference --config ... --model ...`` as the pod runs it."""
    import os
    import subprocess
    import sys

    import httpx

    from kaito_core.testing import free_port

    config = tmp_path / "config" / "inference_config.yaml"
    config.parent.mkdir()
    config.write_text("max_probe_steps: 6\ndtype: float32\nmax_model_len: 128\ntransformers:\n  device_map: cpu\n")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "kaito_presets.runtime.inference",
        "--config",
        str(config),
        "--model",
        str(tiny_model),
        "--served-model-name",
        "phi-3-mini-4k-instruct",
        "--adapters-dir",
        str(tmp_path / "none"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server never became healthy"
            time.sleep(0.2)
        r = httpx.post(f"{url}/chat", json={"prompt": "YOUR QUESTION HERE"}, timeout=60)
        assert r.status_code == 200 and r.json()["Result"].startswith("YOUR QUESTION HERE")
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "phi-3-mini-4k-instruct"
        r = httpx.post(f"{url}/chat", json={"prompt": "x " * 200}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# Kaito's documented /chat body (the transformers runtime's README), verbatim.
KAITO_CHAT_BODY: dict[str, Any] = {
    "prompt": "What is the capital of France?",
    "return_full_text": False,
    "clean_up_tokenization_spaces": False,
    "prefix": None,
    "handle_long_generation": None,
    "generate_kwargs": {
        "max_length": 200,
        "min_length": 0,
        "do_sample": True,
        "early_stopping": False,
        "num_beams": 1,
        "num_beam_groups": 1,
        "diversity_penalty": 0.0,
        "temperature": 1.0,
        "top_k": 10,
        "top_p": 1,
        "typical_p": 1,
        "repetition_penalty": 1,
        "length_penalty": 1,
        "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0,
        "bad_words_ids": None,
        "num_return_sequences": 1,
        "output_scores": False,
        "return_dict_in_generate": False,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "remove_invalid_values": None,
    },
}


def _ignored_notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ignoring generate_kwargs" in r.getMessage()]


def test_chat_accepts_kaitos_documented_body(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="kaito.inference.server"):
        r = client.post("/chat", json=KAITO_CHAT_BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["Result"], str)
    assert not body["Result"].startswith(KAITO_CHAT_BODY["prompt"])  # return_full_text: false
    # max_length 200 is a cap (prompt plus completion), clamped to the server's limit (64 new tokens here).
    assert 1 <= body["usage"]["completion_tokens"] <= 64
    [note] = _ignored_notes(caplog)  # one note per request, naming what had no effect
    for key in ("num_beam_groups", "typical_p", "bad_words_ids", "clean_up_tokenization_spaces", "min_length"):
        assert key in note
    for applied in ("temperature", "top_k", "do_sample", "max_length"):
        assert f" {applied}," not in note and not note.endswith(f" {applied}")


def test_chat_accepts_eos_and_pad_token_ids(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    gen = {
        "max_length": 40,
        "min_length": 0,
        "do_sample": True,
        "early_stopping": False,
        "num_beams": 1,
        "temperature": 1.0,
        "top_k": 10,
        "top_p": 1,
        "typical_p": 1,
        "repetition_penalty": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    with caplog.at_level(logging.INFO, logger="kaito.inference.server"):
        r = client.post("/chat", json={"prompt": "Tell me a joke", "return_full_text": False, "generate_kwargs": gen})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["Result"], str)
    assert r.json()["usage"]["total_tokens"] <= 40
    [note] = _ignored_notes(caplog)
    assert "eos_token_id" in note and "pad_token_id" in note


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"top_k": "ten"}, "top_k"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_length": "long"}, "max_length"),
        ({"repetition_penalty": [1]}, "repetition_penalty"),
        ({"stop_strings": 5}, "stop"),
        ({"frobnicate": 1}, "frobnicate"),  # not a Kaito / HF generate option
        ({"num_return_sequences": 2}, "num_return_sequences"),  # asks for more than one result
    ],
)
def test_chat_kaito_body_with_a_bad_value_is_400_naming_the_field(
    client: Any, override: dict[str, Any], field: str
) -> None:
    body = {**KAITO_CHAT_BODY, "generate_kwargs": {**KAITO_CHAT_BODY["generate_kwargs"], **override}}
    r = client.post("/chat", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_generate_kwargs"
    assert field in r.json()["error"]["message"]
