"""``python -m kaito_presets.runtime.tuning`` — run the tuning job, or print a default template.

    python -m kaito_presets.runtime.tuning --method qlora --config /mnt/config/training_config.yaml \
        [--model /workspace/weights] [--data /mnt/data] [--output /mnt/results] [--metrics-port 5000]
    python -m kaito_presets.runtime.tuning --print-template qlora
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import DEFAULT_CONFIG_PATH, default_template, load_training_config


def build_parser() -> argparse.ArgumentParser:
    """The command line; the Workspace reconciler's pod specs are tested against it."""
    p = argparse.ArgumentParser(prog="python -m kaito_presets.runtime.tuning")
    p.add_argument("--method", choices=["lora", "qlora"], default="lora")
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="training ConfigMap file (YAML)")
    p.add_argument("--model", help="ModelConfig.pretrained_model_name_or_path")
    p.add_argument("--data", help="DatasetConfig.dataset_path")
    p.add_argument("--output", help="TrainingArguments.output_dir")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    p.add_argument("--print-template", choices=["lora", "qlora"], help="print a default ConfigMap value and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.print_template:
        print(default_template(args.print_template), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides: dict[str, Any] = {}
    if args.model:
        overrides.setdefault("ModelConfig", {})["pretrained_model_name_or_path"] = args.model
    if args.data:
        overrides.setdefault("DatasetConfig", {})["dataset_path"] = args.data
    if args.output:
        overrides.setdefault("TrainingArguments", {})["output_dir"] = args.output
    from .train import main_error, run

    output_dir = Path(args.output) if args.output else None
    try:
        cfg = load_training_config(args.config, args.method, overrides)
        output_dir = cfg.output_dir
        run(cfg, metrics_port=args.metrics_port)
    except Exception as exc:
        logging.getLogger("kaito.tuning").exception("tuning failed")
        return main_error(exc, output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
