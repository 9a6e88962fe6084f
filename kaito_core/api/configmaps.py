"""The contents of the ConfigMaps a Workspace names in ``inference.config`` and ``tuning.config``.

Kaito checks them at admission (``api/v1beta1/inference_config_validation.go``,
``tuning_config_validation.go``); kaito-core checks them in the reconciler (the ConfigMap may be made
after the Workspace, and changes without it) and in ``kaito validate`` when the file holds the ConfigMap.
The shapes are the runtimes' own models (:mod:`kaito_presets.runtime.inference.config`,
:mod:`kaito_presets.runtime.tuning.config`, neither imports torch), so what passes here is what the pod
reads. Every :class:`~kaito_core.api.errors.FieldError` names the key, e.g.
``tuning.config[training_config.yaml].training_config.LoraConfig.r``. Pure: no I/O.

Rules (Kaito's, plus the runtimes' types and ranges):

* the key is there (``inference_config.yaml`` / ``training_config.yaml``) and is a YAML mapping;
* inference: every known key has its type and range; ``max_model_len`` (top level, or ``vllm``'s
  ``max-model-len``) is a whole number no larger than the preset's context window (Kaito's
  ModelTokenLimit rule);
* tuning: ``training_config`` is a mapping of known sections only (ModelConfig, QuantizationConfig,
  LoraConfig, TrainingArguments, DatasetConfig, DataCollator), each with its types and ranges;
  ``load_in_4bit`` / ``load_in_8bit`` are booleans, not both true, none for lora, one for qlora;
  ``TrainingArguments.output_dir`` is a string naming a folder under ``/mnt``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import yaml
from kaito_presets import ModelPreset
from kaito_presets.runtime.inference.config import InferenceConfig
from kaito_presets.runtime.tuning.config import TrainingConfig, default_training_config
from pydantic import ValidationError

from kaito_core.api.errors import FieldError, Rule

__all__ = [
    "INFERENCE_CONFIG_KEY",
    "TUNING_CONFIG_KEY",
    "TUNING_SECTIONS",
    "describe_config_errors",
    "validate_inference_config",
    "validate_tuning_config",
]

INFERENCE_CONFIG_KEY = "inference_config.yaml"
TUNING_CONFIG_KEY = "training_config.yaml"
#: The sections ``training_config`` may hold (Kaito's TrainingConfig struct), by their ConfigMap names.
TUNING_SECTIONS = tuple(field.alias or name for name, field in TrainingConfig.model_fields.items())
#: Where the tuning job's results must go (Kaito's base directory; the pod mounts its volumes there).
_OUTPUT_BASE = "/mnt"


def _error(path: str, message: str) -> FieldError:
    return FieldError(path, message, Rule.INVALID_CONFIG)


def _loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _schema_errors(exc: ValidationError, base: str) -> list[FieldError]:
    out = []
    for item in exc.errors():
        message = str(item.get("msg", "is invalid")).replace("Input should be", "must be", 1)
        if item.get("type") == "extra_forbidden":
            message = "is not a known key; remove it or check its spelling"
        out.append(_error(base + _loc(tuple(item["loc"])), message))
    return out


def _document(data: Mapping[str, Any] | None, key: str, field: str, name: str) -> tuple[dict[str, Any] | None,
                                                                                          list[FieldError]]:
    """The parsed YAML mapping under ``key`` of a ConfigMap's ``data``, or the error saying why not."""
    path = f"{field}[{key}]"
    text = (data or {}).get(key)
    if text is None:
        return None, [_error(path, f"ConfigMap {name} has no key {key}; put the configuration under "
                                   f"data.{key} (kaito's runtime reads only that key)")]
    try:
        loaded = yaml.safe_load(str(text))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        return None, [_error(path, f"is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}; fix the syntax")]
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        return None, [_error(path, f"must be a YAML mapping of settings, not a {type(loaded).__name__}")]
    return loaded, []


def _max_model_len(value: Any, path: str, preset: ModelPreset | None) -> list[FieldError]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        return [_error(path, f"{value!r} is not a whole number of tokens; write e.g. 4096")]
    if preset is not None and int(text) > preset.context_length:
        return [_error(path, f"{int(text)} exceeds {preset.name}'s context window of {preset.context_length} "
                             f"tokens; use at most {preset.context_length}")]
    return []


def validate_inference_config(data: Mapping[str, Any] | None, *, name: str, preset: ModelPreset | None = None,
                              field: str = "inference.config") -> list[FieldError]:
    """Problems with an ``inference.config`` ConfigMap's ``data``; [] when the runtime can read it."""
    doc, errors = _document(data, INFERENCE_CONFIG_KEY, field, name)
    if doc is None:
        return errors
    base = f"{field}[{INFERENCE_CONFIG_KEY}]"
    try:
        InferenceConfig.model_validate(doc)
    except ValidationError as exc:
        # max_model_len has its own message below (the preset's window), the rest the model's.
        errors += [e for e in _schema_errors(exc, base) if e.path != f"{base}.max_model_len"]
    errors += _max_model_len(doc.get("max_model_len"), f"{base}.max_model_len", preset)
    vllm = doc.get("vllm")
    if isinstance(vllm, dict):
        for key in ("max-model-len", "max_model_len"):
            if key in vllm:
                errors += _max_model_len(vllm[key], f"{base}.vllm.{key}", preset)
    return errors


def _is_bool_or_none(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _quantization(section: Any, method: str, base: str) -> list[FieldError]:
    given = section if isinstance(section, dict) else {}
    for flag in ("load_in_4bit", "load_in_8bit"):
        if not _is_bool_or_none(given.get(flag)):
            return [_error(f"{base}.{flag}", f"must be true or false, not {given[flag]!r}")]
    # What the runtime uses: the method's defaults overlaid by what the ConfigMap sets, key by key.
    merged = {**default_training_config("qlora" if method == "qlora" else "lora")["QuantizationConfig"], **given}
    four, eight = bool(merged.get("load_in_4bit")), bool(merged.get("load_in_8bit"))
    if four and eight:
        return [_error(base, "set load_in_4bit or load_in_8bit, not both")]
    if method == "lora" and (four or eight):
        return [_error(base, "method lora tunes the full-precision model: set load_in_4bit and load_in_8bit to "
                             "false (or use method qlora)")]
    if method == "qlora" and not (four or eight):
        return [_error(base, "method qlora needs a quantized base model: set load_in_4bit (or load_in_8bit) "
                             "to true, or use method lora")]
    return []


def _output_dir(value: Any, path: str) -> list[FieldError]:
    if not isinstance(value, str):
        return [_error(path, f"must be a string (a folder under {_OUTPUT_BASE}), not {value!r}")]
    clean = posixpath.normpath(posixpath.join(_OUTPUT_BASE, value))
    if clean == _OUTPUT_BASE or not clean.startswith(_OUTPUT_BASE + "/"):
        return [_error(path, f"{value!r} must name a folder under {_OUTPUT_BASE} (e.g. /mnt/results): the "
                             "tuning job's volumes are mounted there and the output is taken from it")]
    return []


def validate_tuning_config(data: Mapping[str, Any] | None, *, name: str, method: str = "lora",
                           field: str = "tuning.config") -> list[FieldError]:
    """Problems with a ``tuning.config`` ConfigMap's ``data`` for ``method``; [] when the runtime can read it."""
    doc, errors = _document(data, TUNING_CONFIG_KEY, field, name)
    if doc is None:
        return errors
    base = f"{field}[{TUNING_CONFIG_KEY}].training_config"
    config = doc.get("training_config")
    if not isinstance(config, dict):
        return [_error(base, "required: the YAML must hold a training_config mapping with the sections "
                             f"{', '.join(TUNING_SECTIONS)}")]
    for section in config:
        if section not in TUNING_SECTIONS:
            errors.append(_error(f"{base}.{section}", f"unknown section {section!r}; use "
                                                      f"{', '.join(TUNING_SECTIONS)}"))
    known = {k: v for k, v in config.items() if k in TUNING_SECTIONS}
    for section, value in known.items():
        if value is not None and not isinstance(value, dict):
            errors.append(_error(f"{base}.{section}", f"must be a mapping of settings, not {type(value).__name__}"))
    if errors:
        return errors
    quantization = _quantization(known.get("QuantizationConfig"), method, f"{base}.QuantizationConfig")
    if quantization:
        return quantization
    arguments = known.get("TrainingArguments") or {}
    if "output_dir" in arguments:
        errors += _output_dir(arguments["output_dir"], f"{base}.TrainingArguments.output_dir")
    try:
        TrainingConfig.model_validate({k: v for k, v in known.items() if v is not None})
    except ValidationError as exc:
        errors += _schema_errors(exc, base)
    return errors


def describe_config_errors(name: str, field: str, errors: list[FieldError]) -> str:
    """A condition message for a ConfigMap whose contents are refused: which, why, and what to do."""
    return (f"ConfigMap {name} ({field}) cannot be used, nothing was started from it; fix it (or remove "
            f"{field} to use the defaults): " + "; ".join(str(e) for e in errors))
