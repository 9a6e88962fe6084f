"""The OpenAI API as clients use it: the official ``openai`` client against the real server on loopback
(transformers backend, a tiny random-weight model on CPU). Every parameter is honoured or refused with a
400 naming it: log-probabilities come back and equal the model's own, penalties and ``logit_bias`` change
the tokens, and tools, constrained output and unknown parameters are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import serve

pytestmark = pytest.mark.runtime

MODEL = "tiny-phi3"
PROMPT = "The quick brown fox"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = serve(tiny_model, tmp_path_factory.mktemp("no-adapters"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> Any:
    """The same weights loaded here, to compute what the server should say from the logits directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return tok, model


def greedy_steps(
    reference: Any, ids: list[int], steps: int, top: int
) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Greedy decoding by full forward passes: each step's token, its log-probability, the top alternatives."""
    import torch

    tok, model = reference
    out = []
    ids = list(ids)
    with torch.inference_mode():
        for _ in range(steps):
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            t = int(torch.argmax(lp))
            values, indices = torch.topk(lp, top)
            alts = [(tok.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)]
            out.append((tok.decode([t]), float(lp[t]), alts))
            ids.append(t)
    return out


# ------------------------------------------------------------------------------------------- logprobs


def test_completion_logprobs_equal_the_models_own(client: Any, reference: Any) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=5)
    choice = r.choices[0]
    lp = choice.logprobs
    assert lp is not None and len(lp.tokens) >= 1
    # The returned text is made of exactly these tokens (a final end-of-text token is not among them).
    assert "".join(lp.tokens) == choice.text
    assert r.usage.completion_tokens - len(lp.tokens) in (0, 1)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    want = greedy_steps(reference, reference[0](PROMPT)["input_ids"], len(lp.tokens), 5)
    for i, (token, logprob, alts) in enumerate(want):
        assert lp.tokens[i] == token
        assert lp.token_logprobs[i] == pytest.approx(logprob, abs=1e-4)
        top: dict[str, float] = {}
        for t, v in alts:
            top.setdefault(t, v)  # two ids may decode alike: the likelier is kept
        assert list(lp.top_logprobs[i]) == list(top)
        assert list(lp.top_logprobs[i].values()) == pytest.approx(list(top.values()), abs=1e-4)


def test_chat_logprobs_equal_the_models_own_and_top_logprobs_are_sorted(client: Any, reference: Any) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert content and "".join(c.token for c in content) == r.choices[0].message.content
    tok = reference[0]
    prompt = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    want = greedy_steps(reference, tok(prompt, add_special_tokens=False)["input_ids"], len(content), 3)
    for got, (token, logprob, alts) in zip(content, want, strict=True):
        assert got.token == token and got.bytes == list(token.encode("utf-8"))
        assert got.logprob == pytest.approx(logprob, abs=1e-4)
        assert len(got.top_logprobs) == 3
        values = [a.logprob for a in got.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert [a.token for a in got.top_logprobs] == [t for t, _ in alts]
        # Greedy: the chosen token is the likeliest.
        assert got.top_logprobs[0].token == got.token and got.top_logprobs[0].logprob == pytest.approx(got.logprob)


def test_top_logprobs_zero_gives_the_chosen_tokens_only(client: Any) -> None:
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, logprobs=True, top_logprobs=0, seed=3)
    content = r.choices[0].logprobs.content
    assert content and all(c.top_logprobs == [] and c.logprob <= 0 for c in content)
    plain = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, temperature=0)
    assert plain.choices[0].logprobs is None


def test_streamed_logprobs_equal_the_whole_answers(client: Any) -> None:
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(messages=CHAT, logprobs=True, top_logprobs=2, **kw)
    streamed = []
    for chunk in client.chat.completions.create(messages=CHAT, logprobs=True, top_logprobs=2, stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed.extend(chunk.choices[0].logprobs.content or [])
    assert [c.model_dump() for c in streamed] == [c.model_dump() for c in whole.choices[0].logprobs.content]

    text = client.completions.create(prompt=PROMPT, logprobs=2, **kw).choices[0]
    tokens, offsets = [], []
    for chunk in client.completions.create(prompt=PROMPT, logprobs=2, stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            tokens.extend(chunk.choices[0].logprobs.tokens)
            offsets.extend(chunk.choices[0].logprobs.text_offset)
    assert tokens == text.logprobs.tokens and offsets == text.logprobs.text_offset


def test_logprobs_stop_with_the_text_at_a_stop_string(client: Any) -> None:
    """The tokens past a stop string are not in the answer, so their log-probabilities are not either."""
    kw: dict[str, Any] = {"model": MODEL, "prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logprobs": 1}
    full = client.completions.create(**kw).choices[0].logprobs
    # A stop string that is a whole token's text, seen first at token k: the answer ends before token k.
    k = next(
        i
        for i in range(1, len(full.tokens))
        if full.tokens[i].strip() and full.tokens[i] not in "".join(full.tokens[:i])
    )
    for stream in (False, True):
        if stream:
            tokens: list[str] = []
            text = ""
            for chunk in client.completions.create(stop=[full.tokens[k]], stream=True, **kw):
                text += chunk.choices[0].text
                tokens.extend(chunk.choices[0].logprobs.tokens if chunk.choices[0].logprobs else [])
        else:
            choice = client.completions.create(stop=[full.tokens[k]], **kw).choices[0]
            text, tokens = choice.text, choice.logprobs.tokens
        assert text == "".join(full.tokens[:k])
        assert tokens == full.tokens[:k]


# ------------------------------------------------------------------------- penalties and logit_bias


def _two_tokens(reference: Any) -> tuple[int, int]:
    """Two ordinary tokens that decode to different visible text."""
    tok = reference[0]
    a, b = tok(" the")["input_ids"][-1], tok(" fox")["input_ids"][-1]
    assert tok.decode([a]) != tok.decode([b]) and tok.decode([a]).strip() and tok.decode([b]).strip()
    return a, b


@pytest.mark.parametrize(
    ("penalty", "pattern"),
    [
        # With +100 on a and +99 on b, greedy says a forever; a penalty of 2 per use of a token gives b its
        # turns: presence (once per token) a b a a ..., frequency (per occurrence) a b a b ...
        ({}, "aaaa"),
        ({"presence_penalty": 2.0}, "abaa"),
        ({"frequency_penalty": 2.0}, "abab"),
    ],
)
def test_logit_bias_and_penalties_steer_the_tokens(
    client: Any, reference: Any, penalty: dict[str, float], pattern: str
) -> None:
    a, b = _two_tokens(reference)
    tok = reference[0]
    r = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=4,
        temperature=0,
        logprobs=0,
        logit_bias={str(a): 100, str(b): 99},
        **penalty,
    )
    names = {tok.decode([a]): "a", tok.decode([b]): "b"}
    assert "".join(names.get(t, "?") for t in r.choices[0].logprobs.tokens) == pattern


def test_honoured_defaults_are_accepted(client: Any) -> None:
    """What OpenAI's clients send at its defaults, and the parameters honoured as no-ops: a 200."""
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=2,
        response_format={"type": "text"},
        tools=[TOOL],
        tool_choice="none",
        parallel_tool_calls=False,
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        logit_bias={},
        user="alice",
        stop=["\n\n"],
        seed=7,
    )
    assert r.choices[0].message.role == "assistant"
    r2 = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, best_of=1, user="bob", echo=True)
    assert r2.choices[0].text.startswith(PROMPT)


# ------------------------------------------------------------------------------------------- refusals

_JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


@pytest.mark.parametrize(
    ("kind", "kwargs", "param", "words"),
    [
        ("chat", {"top_logprobs": 3}, "top_logprobs", "requires logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs", "[0, 20]"),
        (
            "chat",
            {"response_format": {"type": "json_object"}},
            "response_format",
            "transformers backend cannot constrain",
        ),
        ("chat", {"response_format": _JSON_SCHEMA}, "response_format", "vLLM"),
        ("chat", {"tools": [TOOL]}, "tools", "tool calling is not supported"),
        ("chat", {"tools": [TOOL], "tool_choice": "required"}, "tools", "tool calling"),
        ("chat", {"tool_choice": "auto"}, "tool_choice", '"none"'),
        ("chat", {"functions": [TOOL["function"]]}, "functions", "function calling"),
        ("chat", {"n": 2}, "n", "n=1"),
        ("chat", {"logit_bias": {"99999": 5}}, "logit_bias", "vocabulary"),
        ("chat", {"logit_bias": {"5": 101}}, "logit_bias", "[-100, 100]"),
        ("chat", {"presence_penalty": 3}, "presence_penalty", "less than or equal to 2"),
        ("chat", {"stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
        ("chat", {"extra_body": {"min_p": 0.1}}, "min_p", "unsupported parameter"),
        ("chat", {"extra_body": {"guided_json": {"type": "object"}}}, "guided_json", "unsupported parameter"),
        (
            "chat",
            {"extra_body": {"messages": [{"role": "user", "content": "hi", "audio": {}}]}},
            "messages.0.audio",
            "unsupported parameter",
        ),
        ("text", {"logprobs": 21}, "logprobs", "[0, 20]"),
        ("text", {"logprobs": 1, "echo": True}, "logprobs", "echo"),
        ("text", {"suffix": "!"}, "suffix", "not supported"),
        ("text", {"best_of": 2}, "best_of", "only 1"),
        ("text", {"n": 3}, "n", "n=1"),
        ("text", {"extra_body": {"guided_regex": "a+"}}, "guided_regex", "unsupported parameter"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(
    client: Any, kind: str, kwargs: dict[str, Any], param: str, words: str
) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        if kind == "chat":
            client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, **kwargs)
        else:
            client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, **kwargs)
    err = caught.value
    assert err.status_code == 400
    assert param in err.message and words in err.message, err.message
    assert err.param == param, err.body


def test_a_backend_without_logprobs_refuses_them(tiny_model: Path, tmp_path: Path) -> None:
    """The refusal follows the backend's ``honours`` (vLLM's differs from transformers')."""
    import openai
    from kaito_presets.runtime.inference.config import load_config
    from kaito_presets.runtime.inference.server import create_app
    from kaito_presets.runtime.inference.transformers_backend import TransformersBackend

    from kaito_core.testing.asgi import ServerThread

    from .conftest import wait_healthy

    class Plain(TransformersBackend):
        name = "plain"
        honours = frozenset()

    cfg = load_config(None, {"model": str(tiny_model), "adapters_dir": str(tmp_path), "device_map": "cpu"})
    with ServerThread(create_app(Plain(cfg), cfg)) as srv:
        wait_healthy(srv.url)
        with openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0) as c:
            for kwargs in ({"logprobs": True}, {"frequency_penalty": 1.0}, {"logit_bias": {"5": 1}}):
                with pytest.raises(openai.BadRequestError) as caught:
                    c.chat.completions.create(model="", messages=CHAT, max_tokens=2, **kwargs)  # type: ignore[call-overload]
                name = next(iter(kwargs))
                assert caught.value.param == name
                assert f"{name}: the plain backend cannot honour it" in caught.value.message
