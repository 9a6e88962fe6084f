"""Commands that need no cluster: ``kaito validate`` and ``kaito presets``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml
from kaito_presets import Catalog, GpuSku, ModelPreset, UnknownPresetError, default_catalog, format_quantity
from kaito_presets.sizing import smallest_fit

from kaito_core.api import FieldError, parse_workspace, validate_workspace
from kaito_core.api.configmaps import validate_inference_config, validate_tuning_config

__all__ = ["add_parsers", "validate_files"]


def _documents(path: str) -> Iterator[tuple[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    for index, doc in enumerate(yaml.safe_load_all(text)):
        if doc is not None:
            yield f"{'<stdin>' if path == '-' else path}#{index}", doc


def _config_errors(doc: Any, config_maps: dict[str, Any]) -> list[FieldError]:
    """The contents of the ConfigMaps the Workspace names, when the files hold them (by name)."""
    ws, _ = parse_workspace(doc)
    if ws is None:
        return []
    errors: list[FieldError] = []
    if ws.inference is not None and ws.inference.config in config_maps:
        preset = default_catalog().find_model(ws.inference.preset.name) if ws.inference.preset else None
        errors += validate_inference_config(config_maps[ws.inference.config].get("data"), name=ws.inference.config,
                                            preset=preset)
    if ws.tuning is not None and ws.tuning.config in config_maps:
        errors += validate_tuning_config(config_maps[ws.tuning.config].get("data"), name=ws.tuning.config,
                                         method=ws.tuning.method)
    return errors


def validate_files(paths: Iterable[str], out: TextIO = sys.stdout) -> int:
    """Validate every Workspace in the files, and the contents of the ConfigMaps they name that the files
    hold too (``inference.config`` / ``tuning.config``); print one line per problem. Returns the exit code."""
    failures = 0
    checked = 0
    loaded: list[tuple[str, list[tuple[str, Any]]]] = []
    for path in paths:
        try:
            loaded.append((path, list(_documents(path))))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=out)
            failures += 1
    config_maps = {str(doc["metadata"]["name"]): doc for _, docs in loaded for _, doc in docs
                   if isinstance(doc, dict) and doc.get("kind") == "ConfigMap"
                   and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name")}
    for _path, docs in loaded:
        for where, doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Workspace":
                continue
            checked += 1
            name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc.get("metadata"), dict) else "?"
            errors = validate_workspace(doc)
            errors = errors or _config_errors(doc, config_maps)
            if not errors:
                print(f"{where} workspace/{name}: valid", file=out)
                continue
            failures += 1
            for error in errors:
                print(f"{where} workspace/{name}: {error}", file=out)
    if checked == 0 and failures == 0:
        print("no Workspace documents found", file=out)
        return 1
    return 1 if failures else 0


def _fits(sizes: list[GpuSku], limit: int = 4) -> str:
    names = [s.name for s in sizes[:limit]]
    more = len(sizes) - len(names)
    return ", ".join(names) + (f" (+{more} more)" if more > 0 else "") if names else "none in the catalog"


def _fit_text(catalog: Catalog, preset: ModelPreset, cloud: str) -> str:
    """The smallest instance type that serves the preset, as "2 x p5.48xlarge" when it takes several nodes."""
    fit = smallest_fit(catalog, preset, cloud)
    if fit is None:
        return "-"
    sku, nodes = fit
    return sku.name if nodes == 1 else f"{nodes} x {sku.name}"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def _describe(preset: ModelPreset, out: TextIO) -> None:
    catalog = default_catalog()
    inference = preset.inference
    print(f"{preset.name}  ({preset.huggingface_id}, {preset.parameters} parameters, {preset.license})", file=out)
    print(f"  source:          {preset.source}", file=out)
    print(f"  context length:  {preset.context_length}", file=out)
    print(f"  weights:         {format_quantity(preset.weights_size)}", file=out)
    print(f"  runtimes:        {', '.join(preset.runtimes)} (default {preset.default_runtime})", file=out)
    print(f"  gated:           {'yes: set inference.preset.presetOptions.modelAccessSecret' if preset.gated else 'no'}",
          file=out)
    print(f"  inference needs: {format_quantity(inference.gpu_memory)} GPU memory, {inference.gpu_count} GPU(s), "
          f"{format_quantity(inference.disk)} disk", file=out)
    for cloud in ("azure", "aws"):
        fits = catalog.suggest_skus(inference.gpu_memory, inference.gpu_count, cloud)
        split = "" if fits else f" (split over nodes: {_fit_text(catalog, preset, cloud)})"
        print(f"    fits ({cloud}): {_fits(fits, 8)}{split}", file=out)
    if preset.tuning is None:
        print("  tuning:          not supported", file=out)
        return
    print(f"  tuning targets:  {', '.join(preset.tuning.target_modules)}", file=out)
    for method, memory in preset.tuning.methods.items():
        fits = catalog.suggest_skus(memory, preset.tuning.gpu_count, "azure")
        print(f"  tuning {method:<6}   needs {format_quantity(memory)} GPU memory; fits (azure): {_fits(fits, 6)}",
              file=out)


def _cmd_presets(args: argparse.Namespace) -> int:
    catalog = default_catalog()
    if args.name:
        try:
            _describe(catalog.model(args.name), sys.stdout)
        except UnknownPresetError as exc:
            print(f"kaito presets: {exc}", file=sys.stderr)
            return 1
        return 0
    rows = [["PRESET", "PARAMS", "CONTEXT", "GPU MEMORY", "RUNTIMES", "TUNING", "GATED", "SMALLEST FIT (AZURE / AWS)"]]
    for preset in sorted(catalog.models, key=lambda p: p.name):
        rows.append([
            preset.name, preset.parameters, str(preset.context_length), format_quantity(preset.inference.gpu_memory),
            ",".join(preset.runtimes), ",".join(preset.tuning_methods) or "-", "yes" if preset.gated else "no",
            f"{_fit_text(catalog, preset, 'azure')} / {_fit_text(catalog, preset, 'aws')}",
        ])
    _table(rows, sys.stdout)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser("validate", help="check Workspace manifests offline, with the admission messages")
    validate.add_argument("files", nargs="+", help="YAML files ('-' for standard input)")
    validate.set_defaults(func=lambda args: validate_files(args.files))
    presets = sub.add_parser("presets", help="list model presets and the instance types that fit them")
    presets.add_argument("name", nargs="?", help="show one preset in detail")
    presets.set_defaults(func=_cmd_presets)
