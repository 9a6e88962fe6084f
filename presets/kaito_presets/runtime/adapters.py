"""Load LoRA adapters mounted under ``/mnt/adapter/<name>`` and combine them into one weighted adapter.

Layout: one directory per adapter, named after the Workspace's ``inference.adapters[].source.name``,
holding ``adapter_config.json`` and ``adapter_model.safetensors`` (what ``oci pull`` writes), or holding
``data/adapter_config.json`` … (the adapter image mounted directly as a Kubernetes image volume).

Strength of each adapter (``inference.adapters[].strength``), read from the environment:

* ``KAITO_ADAPTER_STRENGTHS`` — a JSON object ``{"<name>": <float>, ...}`` (takes precedence), else
* an environment variable named exactly like the adapter (Kaito's convention, e.g. ``phi-3-adapter=1.0``),
* else 1.0.

The adapters are combined with peft's ``add_weighted_adapter`` (default ``combination_type="cat"``:
exact — the combined delta is the strength-weighted sum of the adapters' deltas, so strength 0 is the
base model and strength 1 of a single adapter is that adapter).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kaito.adapters")

DEFAULT_ADAPTERS_DIR = "/mnt/adapter"
STRENGTHS_ENV = "KAITO_ADAPTER_STRENGTHS"
COMBINED_ADAPTER = "combined_adapter"


class AdapterError(ValueError):
    """A mounted adapter that cannot be used as configured."""


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path
    strength: float


def _parse_strength(name: str, raw: object, source: str) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AdapterError(f"strength of adapter {name!r} from {source} is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise AdapterError(f"strength of adapter {name!r} from {source} must be finite, got {raw!r}")
    return value


def adapter_strength(name: str, env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    if env.get(STRENGTHS_ENV):
        try:
            table = json.loads(env[STRENGTHS_ENV])
        except ValueError as exc:
            raise AdapterError(f"{STRENGTHS_ENV} is not a JSON object: {exc}") from exc
        if not isinstance(table, dict):
            raise AdapterError(f"{STRENGTHS_ENV} must be a JSON object of name -> strength")
        if name in table:
            return _parse_strength(name, table[name], STRENGTHS_ENV)
    if name in env:
        return _parse_strength(name, env[name], f"env {name}")
    return 1.0


def discover_adapters(
    adapters_dir: str | os.PathLike[str] = DEFAULT_ADAPTERS_DIR, env: Mapping[str, str] | None = None
) -> list[AdapterSpec]:
    """Every ``<adapters_dir>/<name>`` holding an ``adapter_config.json``, sorted by name."""
    root = Path(adapters_dir)
    if not root.is_dir():
        return []
    specs = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        if not (d / "adapter_config.json").is_file() and (d / "data" / "adapter_config.json").is_file():
            # The adapter image mounted as-is (a Kubernetes image volume): its files sit under data/.
            d = d / "data"  # noqa: PLW2901
        if not (d / "adapter_config.json").is_file():
            log.warning("skipping %s: no adapter_config.json", d)
            continue
        if not any((d / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
            raise AdapterError(f"adapter {d.name!r} in {d} has no adapter_model.safetensors")
        name = d.parent.name if d.name == "data" and d.parent.parent == root else d.name
        specs.append(AdapterSpec(name=name, path=d, strength=adapter_strength(name, env)))
    return specs


def apply_adapters(model: Any, adapters: list[AdapterSpec], combination_type: str = "cat") -> Any:
    """Wrap ``model`` in a PeftModel whose one active adapter is the weighted combination."""
    if not adapters:
        return model
    from peft import PeftModel

    first, *rest = adapters
    peft_model = PeftModel.from_pretrained(model, str(first.path), adapter_name=first.name, is_trainable=False)
    for spec in rest:
        peft_model.load_adapter(str(spec.path), adapter_name=spec.name, is_trainable=False)
    names = [a.name for a in adapters]
    weights = [a.strength for a in adapters]
    peft_model.add_weighted_adapter(
        adapters=names, weights=weights, adapter_name=COMBINED_ADAPTER, combination_type=combination_type
    )
    peft_model.set_adapter(COMBINED_ADAPTER)
    for name in names:
        peft_model.delete_adapter(name)
    if list(peft_model.active_adapters) != [COMBINED_ADAPTER]:
        raise AdapterError(f"adapters not combined correctly: active {peft_model.active_adapters}")
    peft_model.eval()
    log.info("adapters combined (%s): %s", combination_type, ", ".join(f"{a.name}={a.strength}" for a in adapters))
    return peft_model
