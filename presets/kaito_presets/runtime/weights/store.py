"""The destination folder: safe paths, the ``.kaito-weights.json`` marker, the loadable-model check, retries."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from .common import _CHUNK, MARKER, WeightsError

log = logging.getLogger("kaito.weights")


def _safe_rel(title: str, what: str) -> PurePosixPath:
    p = PurePosixPath(title)
    if not title or "\\" in title or p.is_absolute() or ".." in p.parts or not p.parts or title.startswith("/"):
        raise WeightsError(f"{what}: refusing unsafe file path {title!r} (absolute or with '..')")
    return p


def _target(dest: Path, rel: PurePosixPath, what: str) -> Path:
    """``dest/rel``, refused when a symlink inside ``dest`` would take it elsewhere."""
    target = dest.joinpath(*rel.parts)
    root = os.path.realpath(dest)
    existing = target.parent
    while not existing.exists() and existing != dest:
        existing = existing.parent
    real = os.path.realpath(existing)
    if (real != root and not real.startswith(root + os.sep)) or target.is_symlink():
        raise WeightsError(f"{what}: refusing file path {str(rel)!r}: it leaves {dest}")
    return target


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(dest: Path, source: str, digest: str | None) -> None:
    tmp = dest / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"source": source, "digest": digest}, sort_keys=True) + "\n")
    os.replace(tmp, dest / MARKER)


def _clear(dest: Path) -> None:
    """Remove what is inside ``dest`` (it may be a mount point: the directory itself stays)."""
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _prepare(dest: Path, source: str) -> bool:
    """True when ``dest`` already holds ``source``; clears another source's files."""
    dest.mkdir(parents=True, exist_ok=True)
    marker = read_marker(dest)
    if marker is not None and marker.get("source") == source:
        log.info("%s already in %s (digest %s): nothing to download", source, dest, marker.get("digest"))
        return True
    if marker is not None:
        log.info("%s holds %s, not %s: clearing it", dest, marker.get("source"), source)
        _clear(dest)
    return False


def check_model_dir(dest: Path, source: str) -> None:
    missing = []
    if not (dest / "config.json").is_file():
        missing.append("config.json")
    if not any(p.is_file() for pat in ("*.safetensors", "*.bin") for p in dest.glob(pat)):
        missing.append("a weights file (*.safetensors or *.bin)")
    if missing:
        raise WeightsError(
            f"{source} pulled into {dest} is not a loadable model directory: missing {' and '.join(missing)}"
        )


T = TypeVar("T")


def _with_retries(fn: Callable[[], T], attempts: int, backoff: float, what: str) -> T:
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except WeightsError as exc:
            if not exc.transient or attempt == attempts:
                if exc.transient:
                    raise WeightsError(f"{exc} (gave up after {attempts} attempts)") from exc
                raise
            delay = min(backoff * 2 ** (attempt - 1), 60.0)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1fs", what, attempt, attempts, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
