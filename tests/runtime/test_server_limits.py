"""The inference server's limits over real HTTP: body size, tokenization off the event loop, a bounded
``seed``, a bounded generation queue, bearer-token auth (issue 17, item 5)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import serve, wait_healthy

pytestmark = pytest.mark.runtime

#: The inference pod's liveness probe timeout (kaito_core.controllers.workspace.inference): a /health
#: slower than this counts as a failure, three in a row restart the pod.
PROBE_TIMEOUT_S = 5.0
MiB = 1024 * 1024


def _config(tiny_model: Path, tmp_path: Path, **extra: Any) -> Any:
    from kaito_presets.runtime.inference.config import load_config

    return load_config(
        None,
        {
            "model": str(tiny_model),
            "served_model_name": "tiny-phi3",
            "adapters_dir": str(tmp_path / "none"),
            "device_map": "cpu",
            "dtype": "float32",
            "max_model_len": 256,
            "max_new_tokens_limit": 64,
            **extra,
        },
    )


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The defaults (4 MiB bodies), as a pod runs them."""
    srv = serve(tiny_model, tmp_path_factory.mktemp("no-adapters"))
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------ body size


def test_a_body_over_the_limit_is_413_before_it_is_tokenized(server: Any) -> None:
    import httpx

    big = {"prompt": "The quick brown fox. " * (5 * MiB // 21)}  # over the 4 MiB default
    t0 = time.monotonic()
    r = httpx.post(f"{server.url}/chat", json=big, timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "request_too_large"
    assert "4194304 bytes" in r.json()["error"]["message"] and "max_request_bytes" in r.json()["detail"]
    assert time.monotonic() - t0 < PROBE_TIMEOUT_S  # refused, not tokenized (that takes seconds)


def test_a_chunked_body_is_cut_at_the_limit(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.server import create_app

    from kaito_core.testing.asgi import ServerThread

    cfg = _config(tiny_model, tmp_path, max_request_bytes=1000)
    with ServerThread(create_app(create_backend(cfg), cfg)) as srv:
        wait_healthy(srv.url)

        def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
            yield b'{"prompt": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        r = httpx.post(f"{srv.url}/v1/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        small = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert small.status_code == 200, small.text


# ------------------------------------------------------------------------ tokenization off the event loop


def test_health_answers_within_the_probe_timeout_while_an_8_mib_prompt_is_tokenized(
    tiny_model: Path, tmp_path: Path
) -> None:
    import httpx
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.inference.transformers_backend import TransformersBackend

    from kaito_core.testing.asgi import ServerThread

    streamed: list[str] = []

    class Counting(TransformersBackend):
        def stream(self, model: str, prompt: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            streamed.append(prompt[:20])
            return super().stream(model, prompt, *args, **kwargs)

    cfg = _config(tiny_model, tmp_path, max_request_bytes=16 * MiB)
    with ServerThread(create_app(Counting(cfg), cfg)) as srv:
        wait_healthy(srv.url)
        result: dict[str, Any] = {}

        def huge() -> None:
            t0 = time.monotonic()
            prompt = "The quick brown fox. " * (8 * MiB // 21)
            r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": prompt}, timeout=120)
            result.update(status=r.status_code, body=r.json(), seconds=time.monotonic() - t0)

        worker = threading.Thread(target=huge)
        worker.start()
        probes: list[float] = []
        while worker.is_alive():
            t0 = time.monotonic()
            r = httpx.get(f"{srv.url}/health", timeout=30)
            probes.append(time.monotonic() - t0)
            assert r.status_code == 200
            time.sleep(0.05)
        worker.join()
    # The prompt's tokens are checked before any generation work, with a clear message.
    assert result["status"] == 400 and result["body"]["error"]["code"] == "context_length_exceeded"
    assert "context is 256 tokens" in result["body"]["error"]["message"]
    assert streamed == []
    # The kubelet's probes kept being answered, each well within their timeout.
    print(f"8 MiB prompt answered in {result['seconds']:.1f}s; /health probes: {[round(p, 3) for p in probes]}")
    assert len(probes) >= 3, (probes, result["seconds"])
    assert max(probes) < PROBE_TIMEOUT_S, probes


# ----------------------------------------------------------------------------------------------- seed


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/chat", {"prompt": "hi", "generate_kwargs": {"seed": 2**70}}, "invalid_generate_kwargs"),
        ("/chat", {"prompt": "hi", "seed": -(2**64)}, "invalid_generate_kwargs"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70}, "invalid_request"),
        ("/v1/completions", {"prompt": "hi", "seed": 2**63}, "invalid_request"),
    ],
)
def test_a_seed_beyond_64_bits_is_a_400_naming_it(server: Any, path: str, body: dict[str, Any], code: str) -> None:
    import httpx

    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and "seed" in r.json()["error"]["message"]


def test_a_64_bit_seed_is_served(server: Any) -> None:
    import httpx

    body = {"prompt": "hi", "max_tokens": 2, "seed": 2**63 - 1}
    assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).status_code == 200


# --------------------------------------------------------------------------------- the generation queue


def test_a_full_generation_queue_answers_429_at_once(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.inference.transformers_backend import TransformersBackend

    from kaito_core.testing.asgi import ServerThread

    gate = threading.Event()

    class Gated(TransformersBackend):
        async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            await asyncio.to_thread(gate.wait, 60)
            async for delta in super().stream(*args, **kwargs):
                yield delta

    cfg = _config(tiny_model, tmp_path, max_pending_requests=1)
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    try:
        with ServerThread(create_app(Gated(cfg), cfg)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            wait_healthy(srv.url)
            # A stream holds its slot until it has been sent.
            with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as first:
                assert first.status_code == 200
                t0 = time.monotonic()
                r = c.post("/chat", json={"prompt": "me too"}, timeout=10)
                assert r.status_code == 429, r.text
                assert time.monotonic() - t0 < 5  # refused, not queued behind the first
                assert r.json()["error"]["code"] == "server_busy" and "max_pending_requests" in r.json()["detail"]
                assert r.headers["retry-after"] == "1"
                assert 'kaito_inference_requests_pending 1.0' in c.get("/metrics").text
                gate.set()
                assert first.read().endswith(b"data: [DONE]\n\n")
            # The slot is free again once the stream ended (and after a 400, which never held one for long).
            too_many = {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 100000}}
            assert c.post("/chat", json=too_many).status_code == 400
            r = c.post("/chat", json={"prompt": "now", "generate_kwargs": {"max_new_tokens": 2}})
            assert r.status_code == 200, r.text
            assert 'kaito_inference_requests_pending 0.0' in c.get("/metrics").text
    finally:
        gate.set()


# ------------------------------------------------------------------------------------------------ auth


def test_bearer_token_from_a_file_guards_all_but_the_probes(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.server import create_app

    from kaito_core.testing.asgi import ServerThread

    token = tmp_path / "secret" / "api-key"
    token.parent.mkdir()
    token.write_text("s3cret-token\n")
    cfg = _config(tiny_model, tmp_path, api_key_file=str(token))
    with ServerThread(create_app(create_backend(cfg), cfg)) as srv:
        wait_healthy(srv.url)  # /health needs no token
        assert httpx.get(f"{srv.url}/metrics").status_code == 200
        body = {"prompt": "hi", "max_tokens": 2}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic czNjcmV0LXRva2Vu"}):
            r = httpx.post(f"{srv.url}/v1/completions", json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401
        assert httpx.get(f"{srv.url}/nowhere").status_code == 401  # no path is revealed
        good = {"authorization": "Bearer s3cret-token"}
        assert httpx.post(f"{srv.url}/v1/completions", json=body, headers=good, timeout=60).status_code == 200
        assert httpx.get(f"{srv.url}/v1/models", headers=good).json()["data"][0]["id"] == "tiny-phi3"
        # A rotated Secret: the new token is taken, the old one refused.
        token.write_text("rotated-token")
        assert httpx.post(f"{srv.url}/v1/completions", json=body, headers=good).status_code == 401
        rotated = {"authorization": "Bearer rotated-token"}
        assert httpx.post(f"{srv.url}/v1/completions", json=body, headers=rotated, timeout=60).status_code == 200


def test_bearer_token_from_the_environment(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.server import create_app

    from kaito_core.testing.asgi import ServerThread

    monkeypatch.setenv("KAITO_API_KEY", "env-token")
    cfg = _config(tiny_model, tmp_path)
    with ServerThread(create_app(create_backend(cfg), cfg)) as srv:
        wait_healthy(srv.url)
        assert httpx.post(f"{srv.url}/chat", json={"prompt": "hi"}).status_code == 401
        good = {"authorization": "Bearer env-token"}
        r = httpx.post(f"{srv.url}/chat", json={"prompt": "hi"}, headers=good, timeout=60)
        assert r.status_code == 200, r.text


def test_an_unreadable_api_key_file_fails_at_start(tiny_model: Path, tmp_path: Path) -> None:
    from kaito_presets.runtime.inference.base import create_backend
    from kaito_presets.runtime.inference.server import create_app

    cfg = _config(tiny_model, tmp_path, api_key_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="api_key_file"):
        create_app(create_backend(cfg), cfg)


def test_without_a_token_there_is_no_auth(server: Any) -> None:
    import httpx

    assert httpx.post(f"{server.url}/chat", json={"prompt": "hi"}, timeout=60).status_code == 200
