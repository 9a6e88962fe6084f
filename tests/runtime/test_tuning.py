"""The tuning job on CPU: real LoRA and QLoRA runs, the seed dataset's shape, adapter strength."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import cpu_overrides, write_seed_parquet

pytestmark = pytest.mark.runtime


def _logits(model: Any, tokenizer: Any) -> Any:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits.float()


def _base(tiny_model: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, local_files_only=True).eval()


def _adapter_dir(root: Path, name: str, src: Path) -> Path:
    import shutil

    dest = root / name
    dest.mkdir(parents=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(src / f, dest / f)
    return root


def test_lora_run_on_the_seed_dataset_writes_adapter_and_marker(lora_adapter: Path) -> None:
    for f in ("adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"):
        assert (lora_adapter / f).is_file(), f
    marker = json.loads((lora_adapter / "fine_tuning_completed.txt").read_text())
    assert marker["steps"] == 6 and marker["train_loss"] > 0
    config = json.loads((lora_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert set(config["target_modules"]) == {"qkv_proj", "o_proj"}  # the phi3 preset default
    assert config["r"] == 8


def test_adapter_changes_logits_and_strength_zero_is_the_base_model(
    tiny_model: Path, lora_adapter: Path, tmp_path: Path
) -> None:
    import torch
    from kaito_presets.runtime.adapters import apply_adapters, discover_adapters
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    base = _logits(_base(tiny_model), tokenizer)
    root = _adapter_dir(tmp_path / "adapter", "seed-adapter", lora_adapter)

    full = apply_adapters(_base(tiny_model), discover_adapters(root, env={"seed-adapter": "1.0"}))
    tuned = _logits(full, tokenizer)
    assert (tuned - base).abs().max().item() > 0.05, "a high learning rate must move the logits"

    zero = apply_adapters(_base(tiny_model), discover_adapters(root, env={"seed-adapter": "0"}))
    torch.testing.assert_close(_logits(zero, tokenizer), base, atol=1e-5, rtol=1e-5)

    half = apply_adapters(
        _base(tiny_model), discover_adapters(root, env={"KAITO_ADAPTER_STRENGTHS": '{"seed-adapter": 0.5}'})
    )
    mid = _logits(half, tokenizer)
    assert (mid - base).abs().max().item() > 1e-3 and (mid - tuned).abs().max().item() > 1e-3


def test_strength_one_combined_equals_the_plain_adapter(tiny_model: Path, lora_adapter: Path, tmp_path: Path) -> None:
    import torch
    from kaito_presets.runtime.adapters import apply_adapters, discover_adapters
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    plain = PeftModel.from_pretrained(_base(tiny_model), str(lora_adapter)).eval()
    root = _adapter_dir(tmp_path / "adapter", "a", lora_adapter)
    combined = apply_adapters(_base(tiny_model), discover_adapters(root, env={}))
    torch.testing.assert_close(_logits(combined, tokenizer), _logits(plain, tokenizer), atol=1e-4, rtol=1e-4)


def test_bad_strength_is_a_clear_error(lora_adapter: Path, tmp_path: Path) -> None:
    from kaito_presets.runtime.adapters import AdapterError, discover_adapters

    root = _adapter_dir(tmp_path / "adapter", "a", lora_adapter)
    with pytest.raises(AdapterError, match="not a number"):
        discover_adapters(root, env={"a": "strong"})


def test_qlora_run_on_cpu(
    tiny_model: Path, seed_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real 4-bit nf4 QLoRA through bitsandbytes' CPU backend, driven by the CLI entry point."""
    import torch
    from kaito_presets.runtime.adapters import apply_adapters, discover_adapters
    from kaito_presets.runtime.tuning.__main__ import main
    from transformers import AutoTokenizer

    out = tmp_path / "results"
    over = cpu_overrides(tiny_model, seed_data_dir, out, lr=0.05, steps=4)
    config = tmp_path / "training_config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"training_config": {k: over[k] for k in ("ModelConfig", "QuantizationConfig", "TrainingArguments")}}
        )
    )
    assert main(["--method", "qlora", "--config", str(config), "--data", str(seed_data_dir)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "completed", kinds
    assert events[0]["quantized"] is True
    cfg_event = next(e for e in events if e["event"] == "config")
    assert cfg_event["quantization"]["load_in_4bit"] is True
    assert cfg_event["quantization"]["bnb_4bit_quant_type"] == "nf4"
    losses = [e["loss"] for e in events if e["event"] == "progress" and "loss" in e]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert (out / "adapter_model.safetensors").is_file() and (out / "fine_tuning_completed.txt").is_file()

    # The QLoRA adapter applies to the full-precision base, and it moves the logits.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    base = _logits(_base(tiny_model), tokenizer)
    root = _adapter_dir(tmp_path / "adapter", "q", out)
    tuned = _logits(apply_adapters(_base(tiny_model), discover_adapters(root, env={})), tokenizer)
    assert (tuned - base).abs().max().item() > 0.05
    assert torch.isfinite(tuned).all()


def test_qlora_really_quantizes(tiny_model: Path) -> None:
    import torch
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(tiny_model, quantization_config=q, device_map="cpu", local_files_only=True)
    assert isinstance(m.model.layers[0].self_attn.qkv_proj, Linear4bit)


def test_training_progress_reaches_metrics(tiny_model: Path, tmp_path: Path) -> None:
    import httpx
    from kaito_presets.runtime.tuning.config import load_training_config
    from kaito_presets.runtime.tuning.train import run

    from kaito_core.testing import free_port

    data = tmp_path / "data"
    (data).mkdir()
    (data / "train.jsonl").write_text(
        "\n".join(
            json.dumps({"prompt": f"Count to {i}:", "completion": " ".join(map(str, range(i)))}) for i in range(1, 9)
        )
    )
    port = free_port()
    cfg = load_training_config(None, "lora", cpu_overrides(tiny_model, data, tmp_path / "out", steps=2))
    run(cfg, metrics_port=port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("kaito_tuning")
    }
    assert values["kaito_tuning_step"] == 2
    assert values["kaito_tuning_completed"] == 1
    assert values["kaito_tuning_loss"] > 0


# ----------------------------------------------------------------------------------------- data


def test_dataset_shapes_and_formats(tmp_path: Path) -> None:
    import pandas as pd
    from kaito_presets.runtime.tuning.config import DatasetConfig
    from kaito_presets.runtime.tuning.data import load_dataset

    write_seed_parquet(tmp_path / "a" / "seed.parquet", repeat=1)
    train, ev = load_dataset(DatasetConfig(dataset_path=str(tmp_path / "a"), train_test_split=0.75))
    assert train.column_names == ["messages"] and len(train) == 6 and ev is not None and len(ev) == 2

    (tmp_path / "b").mkdir()
    pd.DataFrame({"prompt": ["p1", "p2"], "completion": ["c1", "c2"], "extra": [1, 2]}).to_csv(tmp_path / "b" / "d.csv")
    train, _ = load_dataset(DatasetConfig(dataset_path=str(tmp_path / "b")))
    assert sorted(train.column_names) == ["completion", "prompt"]

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "d.json").write_text(json.dumps([{"body": "hello"}, {"body": "world"}]))
    train, _ = load_dataset(DatasetConfig(dataset_path=str(tmp_path / "c"), text_column="body"))
    assert train.column_names == ["text"]


def test_dataset_without_usable_columns_names_what_it_found(tmp_path: Path) -> None:
    from kaito_presets.runtime.tuning.config import DatasetConfig
    from kaito_presets.runtime.tuning.data import DatasetError, load_dataset

    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DatasetError, match=r"found columns \['question', 'answer'\]"):
        load_dataset(DatasetConfig(dataset_path=str(tmp_path)))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no dataset files .* found: \['notes.txt'\]"):
        load_dataset(DatasetConfig(dataset_path=str(empty)))


def test_templates_and_config_overlay(tmp_path: Path) -> None:
    from kaito_presets.runtime.tuning.config import default_template, load_training_config

    lora = yaml.safe_load(default_template("lora"))["training_config"]
    qlora = yaml.safe_load(default_template("qlora"))["training_config"]
    assert lora["QuantizationConfig"] == {}
    assert qlora["QuantizationConfig"]["load_in_4bit"] is True
    assert qlora["QuantizationConfig"]["bnb_4bit_quant_type"] == "nf4"
    assert set(lora) == {"ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DatasetConfig"}
    user = tmp_path / "training_config.yaml"
    user.write_text("training_config:\n  TrainingArguments:\n    num_train_epochs: 3\n  DataCollator:\n    mlm: true\n")
    cfg = load_training_config(user, "qlora")
    assert cfg.training_args["num_train_epochs"] == 3
    assert cfg.training_args["output_dir"] == "/mnt/results"  # defaults kept key by key
    assert cfg.quantization.enabled
    assert not load_training_config(None, "lora").quantization.enabled
    with pytest.raises(ValueError, match="unknown tuning method"):
        load_training_config(None, "full")  # type: ignore[arg-type]


def test_image_volume_layout_is_discovered(lora_adapter: Path, tmp_path: Path) -> None:
    """An adapter image mounted as a Kubernetes image volume keeps its files under data/."""
    from kaito_presets.runtime.adapters import discover_adapters

    _adapter_dir(tmp_path / "adapter" / "phi-3-adapter", "data", lora_adapter)
    [spec] = discover_adapters(tmp_path / "adapter", env={"phi-3-adapter": "0.25"})
    assert spec.name == "phi-3-adapter" and spec.strength == 0.25
    assert spec.path == tmp_path / "adapter" / "phi-3-adapter" / "data"


def test_a_failed_run_leaves_a_failure_marker_and_exits_1(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaito_presets.runtime.tuning.__main__ import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "d.csv").write_text("question,answer\nq,a\n")
    out = tmp_path / "results"
    rc = main(
        ["--config", str(tmp_path / "none.yaml"), "--model", str(tiny_model), "--data", str(data), "--output", str(out)]
    )
    assert rc == 1
    failed = json.loads((out / "fine_tuning_failed.txt").read_text())
    assert "found columns ['question', 'answer']" in failed["error"]
    assert not (out / "fine_tuning_completed.txt").exists()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["event"] == "failed"
