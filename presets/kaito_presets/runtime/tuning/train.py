"""The tuning job: LoRA / QLoRA with peft + trl's ``SFTTrainer`` (trl's own collator).

Writes ``adapter_config.json`` and ``adapter_model.safetensors`` into the output directory
(``/mnt/results``), then the completion marker ``fine_tuning_completed.txt`` (a JSON summary) — the
push sidecar waits for that file. Progress goes to stdout as one JSON object per line
(``{"event": "progress", "step": ..., "loss": ...}``) and to Prometheus gauges on ``--metrics-port``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from .config import COMPLETION_MARKER, FAILURE_MARKER, TARGET_MODULES, TrainingConfig
from .data import load_dataset

log = logging.getLogger("kaito.tuning")


def emit(event: str, **fields: Any) -> None:
    """One structured progress line on stdout."""
    print(json.dumps({"event": event, "ts": round(time.time(), 3), **fields}, default=str), flush=True)


class TuningMetrics:
    def __init__(self, port: int | None = None) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self.step = Gauge("kaito_tuning_step", "Optimizer steps done", registry=r)
        self.max_steps = Gauge("kaito_tuning_max_steps", "Optimizer steps planned", registry=r)
        self.epoch = Gauge("kaito_tuning_epoch", "Fractional epoch", registry=r)
        self.loss = Gauge("kaito_tuning_loss", "Last logged training loss", registry=r)
        self.eval_loss = Gauge("kaito_tuning_eval_loss", "Last evaluation loss", registry=r)
        self.lr = Gauge("kaito_tuning_learning_rate", "Current learning rate", registry=r)
        self.completed = Gauge("kaito_tuning_completed", "1 once the adapter is written", registry=r)
        if port:
            from prometheus_client import start_http_server

            start_http_server(port, registry=r)


def _progress_callback(metrics: TuningMetrics) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            metrics.max_steps.set(state.max_steps)
            emit("train_begin", max_steps=state.max_steps, epochs=args.num_train_epochs)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            values: dict[str, float] = {}
            for key, raw in (logs or {}).items():
                try:
                    values[key] = float(raw)
                except (TypeError, ValueError):
                    continue
            metrics.step.set(state.global_step)
            if state.epoch is not None:
                metrics.epoch.set(state.epoch)
            for key, gauge in (("loss", metrics.loss), ("eval_loss", metrics.eval_loss), ("learning_rate", metrics.lr)):
                if key in values:
                    gauge.set(values[key])
            payload: dict[str, Any] = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 4),
            }
            payload.update({k: v for k, v in values.items() if k not in ("step", "max_steps", "epoch")})
            emit("progress", **payload)

    return Progress()


def _dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return name
    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16"}
    value = getattr(torch, aliases.get(name, name), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return value


def _resolve_chat_template(value: str | None) -> str | None:
    if not value:
        return None
    return value if any(c in value for c in "{}\n") else Path(value).read_text()


def run(cfg: TrainingConfig, *, metrics_port: int | None = None) -> Path:
    """Train and write the adapter; return the output directory."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    metrics = TuningMetrics(metrics_port)
    out_dir = cfg.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / COMPLETION_MARKER
    marker.unlink(missing_ok=True)
    (out_dir / FAILURE_MARKER).unlink(missing_ok=True)
    mc = cfg.model_cfg
    model_path = mc.pretrained_model_name_or_path
    cuda = torch.cuda.is_available()
    emit("start", model=model_path, output_dir=str(out_dir), quantized=cfg.quantization.enabled, cuda=cuda)

    train_ds, eval_ds = load_dataset(cfg.dataset)
    emit(
        "dataset",
        rows=len(train_ds),
        eval_rows=len(eval_ds) if eval_ds is not None else 0,
        columns=train_ds.column_names,
    )

    tokenizer = AutoTokenizer.from_pretrained(
        model_path, local_files_only=mc.local_files_only, trust_remote_code=mc.trust_remote_code
    )
    template = _resolve_chat_template(mc.chat_template)
    if template:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    model_kwargs: dict[str, Any] = dict(mc.model_extra or {})
    model_kwargs.update(local_files_only=mc.local_files_only, trust_remote_code=mc.trust_remote_code)
    dtype = _dtype(mc.torch_dtype)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if mc.device_map is not None and (cuda or mc.device_map != "auto"):
        model_kwargs["device_map"] = mc.device_map
    qc = cfg.quantization
    if qc.enabled:
        q = qc.model_dump()
        q["bnb_4bit_compute_dtype"] = _dtype(q["bnb_4bit_compute_dtype"])
        model_kwargs["quantization_config"] = BitsAndBytesConfig(**q)  # type: ignore[no-untyped-call]
        if not cuda:
            model_kwargs.setdefault("device_map", "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)

    targs: dict[str, Any] = {"report_to": [], "output_dir": str(out_dir)}
    targs.update(cfg.training_args)
    if not cuda:
        targs.setdefault("use_cpu", True)
        targs.setdefault("bf16", False)
        targs.setdefault("fp16", False)
    elif "bf16" not in targs and "fp16" not in targs:
        targs["bf16"] = bool(torch.cuda.is_bf16_supported())
    if eval_ds is None:
        targs["eval_strategy"] = "no"
    elif targs.get("eval_strategy", "no") == "no":
        targs["eval_strategy"] = targs.get("save_strategy", "epoch")
    fields = set(SFTConfig.__dataclass_fields__)
    if "activation_checkpointing" in fields:  # transformers >= 5 renamed gradient_checkpointing*
        for old_key in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
            if old_key in targs:
                targs.setdefault(old_key.replace("gradient", "activation"), targs.pop(old_key))
    sft_args = SFTConfig(**targs)
    checkpointing = bool(
        getattr(sft_args, "activation_checkpointing", None) or getattr(sft_args, "gradient_checkpointing", False)
    )
    if qc.enabled:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)  # type: ignore[no-untyped-call]

    lora = cfg.lora.model_dump(exclude_none=True)
    if "target_modules" not in lora:
        model_type = AutoConfig.from_pretrained(model_path, local_files_only=mc.local_files_only).model_type
        lora["target_modules"] = TARGET_MODULES.get(model_type, "all-linear")
    lora.setdefault("task_type", "CAUSAL_LM")
    peft_config = PeftLoraConfig(**lora)
    emit(
        "config",
        lora={k: v for k, v in lora.items() if k != "task_type"},
        quantization=qc.model_dump() if qc.enabled else None,
    )

    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_progress_callback(metrics)],
    )
    # Our Progress callback prints the structured lines; transformers' own printers would mix
    # Python dicts into stdout.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t0 = time.monotonic()
    result = trainer.train()
    trained: Any = trainer.model
    trained.save_pretrained(str(out_dir), safe_serialization=True)
    for required in ("adapter_config.json", "adapter_model.safetensors"):
        if not (out_dir / required).is_file():
            raise RuntimeError(f"training finished but {out_dir / required} was not written")
    loss = float(result.training_loss) if result.training_loss is not None else math.nan
    summary = {
        "model": model_path,
        "steps": int(result.global_step),
        "train_loss": loss,
        "seconds": round(time.monotonic() - t0, 2),
        "files": ["adapter_config.json", "adapter_model.safetensors"],
    }
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary) + "\n")
    tmp.replace(marker)  # atomic: the push sidecar never sees a half-written marker
    metrics.completed.set(1)
    emit("completed", output_dir=str(out_dir), marker=str(marker), **summary)
    return out_dir


def main_error(exc: BaseException, output_dir: Path | None = None) -> int:
    """Report a failed run; the failure marker lets the push sidecar stop waiting."""
    emit("failed", error=f"{type(exc).__name__}: {exc}")
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / FAILURE_MARKER).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        except OSError:
            pass
    print(f"error: {exc}", file=sys.stderr)
    return 1
