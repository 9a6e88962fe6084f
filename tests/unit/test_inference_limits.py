"""The inference server's pure parts, without a model or HTTP: the token budget, the sampling options,
the generation queue's slots, the bearer tokens, and that every setting is documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kaito_presets.runtime.inference.config import InferenceConfig, TransformersOptions
from kaito_presets.runtime.inference.errors import RequestError
from kaito_presets.runtime.inference.limits import Admission, ApiKeys
from kaito_presets.runtime.inference.sampling import chat_kwargs, sampling_from_kwargs, token_budget
from kaito_presets.runtime.inference.schemas import SEED_MAX, SEED_MIN, ChatRequest, CompletionRequest
from pydantic import ValidationError


def budget(n_prompt: int, requested: int | None, max_length: int | None = None) -> int:
    return token_budget(n_prompt, 256, requested, default=100, limit=64, max_length=max_length)


@pytest.mark.parametrize(
    ("n_prompt", "requested", "max_length", "expected"),
    [
        (10, None, None, 100),  # the default, within the context
        (200, None, None, 56),  # the default clamped to what the context leaves
        (10, 64, None, 64),
        (10, None, 200, 64),  # max_length is a cap, clamped to the server's limit
        (250, None, 300, 6),  # ... and to the context
        (10, None, 15, 5),
    ],
)
def test_token_budget(n_prompt: int, requested: int | None, max_length: int | None, expected: int) -> None:
    assert budget(n_prompt, requested, max_length) == expected


@pytest.mark.parametrize(
    ("n_prompt", "requested", "max_length", "code"),
    [
        (256, None, None, "context_length_exceeded"),
        (10, 65, None, "max_tokens_exceeded"),
        (200, 60, None, "context_length_exceeded"),
        (10, None, 10, "context_length_exceeded"),
    ],
)
def test_token_budget_refusals(n_prompt: int, requested: int | None, max_length: int | None, code: str) -> None:
    with pytest.raises(RequestError) as err:
        budget(n_prompt, requested, max_length)
    assert err.value.status == 400 and err.value.code == code


@pytest.mark.parametrize("seed", [SEED_MIN, 0, 42, SEED_MAX])
def test_a_64_bit_seed_is_taken(seed: int) -> None:
    assert sampling_from_kwargs({"seed": seed}).seed == seed
    assert CompletionRequest(prompt="hi", seed=seed).seed == seed


@pytest.mark.parametrize("seed", [2**70, SEED_MAX + 1, SEED_MIN - 1])
def test_a_seed_beyond_64_bits_is_refused(seed: int) -> None:
    with pytest.raises(RequestError, match="seed") as err:
        sampling_from_kwargs({"seed": seed})
    assert err.value.status == 400
    with pytest.raises(ValidationError, match="seed"):
        CompletionRequest(prompt="hi", seed=seed)


def test_chat_kwargs_take_the_top_level_and_spell_stop_strings_stop() -> None:
    req = ChatRequest.model_validate(
        {"prompt": "hi", "temperature": 0.5, "generate_kwargs": {"stop_strings": ["."], "num_beams": 1}}
    )
    assert chat_kwargs(req) == {"stop": ["."], "num_beams": 1, "temperature": 0.5}
    with pytest.raises(RequestError, match="frobnicate"):
        chat_kwargs(ChatRequest.model_validate({"prompt": "hi", "frobnicate": 1}))


def test_admission_is_bounded_and_each_slot_released_once() -> None:
    queue = Admission(2)
    first, second = queue.admit(), queue.admit()
    with pytest.raises(RequestError) as err:
        queue.admit()
    assert err.value.status == 429 and err.value.code == "server_busy"
    first.release()
    first.release()
    assert queue.pending == 1
    with queue.admit():
        assert queue.pending == 2
    assert queue.pending == 1
    with queue.admit() as slot:
        slot.hand_over()  # a stream keeps it past the block
    assert queue.pending == 2
    slot.release()
    second.release()
    assert queue.pending == 0


def test_api_keys(tmp_path: Path) -> None:
    assert not ApiKeys(None, None).enabled and not ApiKeys(None, "  ").enabled
    env = ApiKeys(None, "tok\n")
    assert env.enabled and env.accepts("tok") and not env.accepts("tok2") and not env.accepts("")
    f = tmp_path / "token"
    f.write_text("one\n")
    keys = ApiKeys(str(f), "two")
    assert keys.accepts("one") and keys.accepts("two") and not keys.accepts("three")
    f.write_text("three-rotated")
    assert keys.accepts("three-rotated") and not keys.accepts("one")
    f.unlink()  # a Secret mid-rotation: the last good token stays
    assert keys.accepts("three-rotated")
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        if bad.name == "empty":
            bad.write_text("\n")
        with pytest.raises(ValueError, match="api_key_file"):
            ApiKeys(str(bad))


@pytest.mark.parametrize("model", [InferenceConfig, TransformersOptions])
def test_every_setting_is_documented(model: Any) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no docstring"


def test_limit_defaults() -> None:
    cfg = InferenceConfig()
    assert cfg.max_request_bytes == 4 * 1024 * 1024
    assert cfg.max_pending_requests is None and cfg.api_key_file is None
