"""Dataset discovery and normalisation for tuning.

Files under the data path (``/mnt/data`` by default; a single file works too): ``.parquet``, ``.csv``,
``.json``, ``.jsonl``. Accepted shapes, in this order of preference:

* ``messages`` — a list of ``{"role", "content"}`` chat turns (e.g. dolly-15k-oai-style);
* ``prompt`` and ``completion`` — loss on the completion only;
* ``text`` — plain language modelling.

Column names can be remapped with ``DatasetConfig.messages_column`` / ``prompt_column`` /
``completion_column`` / ``text_column``. Anything else fails with an error naming the columns found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import DatasetConfig

EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


class DatasetError(ValueError):
    """The data cannot be used for tuning; the message says why and what was found."""


def discover_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in EXTENSIONS:
            raise DatasetError(f"{p}: unsupported file type {p.suffix!r}; use {', '.join(sorted(EXTENSIONS))}")
        return [p]
    if not p.is_dir():
        raise DatasetError(f"dataset path {p} does not exist (is the data volume mounted?)")
    files = sorted(
        f
        for f in p.rglob("*")
        if f.is_file() and f.suffix.lower() in EXTENSIONS and not any(part.startswith(".") for part in f.parts)
    )
    if not files:
        found = sorted(f.name for f in p.rglob("*") if f.is_file())[:10]
        raise DatasetError(f"no dataset files ({', '.join(sorted(EXTENSIONS))}) under {p}; found: {found or 'nothing'}")
    return files


def _select(ds: Any, cfg: DatasetConfig, source: str) -> Any:
    cols = list(ds.column_names)
    messages = cfg.messages_column or "messages"
    prompt, completion = cfg.prompt_column or "prompt", cfg.completion_column or "completion"
    text = cfg.text_column or "text"
    if messages in cols:
        ds = ds.select_columns([messages])
        return ds.rename_column(messages, "messages") if messages != "messages" else ds
    if prompt in cols and completion in cols:
        ds = ds.select_columns([prompt, completion])
        if prompt != "prompt":
            ds = ds.rename_column(prompt, "prompt")
        if completion != "completion":
            ds = ds.rename_column(completion, "completion")
        return ds
    if text in cols:
        ds = ds.select_columns([text])
        return ds.rename_column(text, "text") if text != "text" else ds
    raise DatasetError(
        f"{source}: no usable columns; found columns {cols}. Expected '{messages}' (chat turns), "
        f"or '{prompt}' and '{completion}', or '{text}' (or set DatasetConfig.messages_column / "
        "prompt_column / completion_column / text_column)"
    )


def _validate_messages(ds: Any, source: str) -> None:
    sample = ds[0]["messages"]
    if (
        not isinstance(sample, list)
        or not sample
        or not all(isinstance(m, dict) and "role" in m and "content" in m for m in sample)
    ):
        raise DatasetError(
            f"{source}: the messages column must hold lists of {{'role', 'content'}} turns; "
            f"first row is {str(sample)[:200]}"
        )


def load_dataset(cfg: DatasetConfig) -> tuple[Any, Any | None]:
    """(train, eval or None) as ``datasets.Dataset`` in one of the three shapes."""
    import datasets

    files = discover_files(cfg.dataset_path)
    parts = []
    for f in files:
        try:
            ds = datasets.load_dataset(EXTENSIONS[f.suffix.lower()], data_files=str(f), split="train")
        except Exception as exc:
            raise DatasetError(f"{f}: cannot read as {EXTENSIONS[f.suffix.lower()]}: {exc}") from exc
        if len(ds) == 0:
            continue
        parts.append(_select(ds, cfg, str(f)))
    if not parts:
        raise DatasetError(f"the dataset files under {cfg.dataset_path} hold no rows")
    shapes = {tuple(sorted(p.column_names)) for p in parts}
    if len(shapes) > 1:
        raise DatasetError(f"dataset files mix shapes {sorted(shapes)}; use one shape for all files")
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if "messages" in ds.column_names:
        _validate_messages(ds, cfg.dataset_path)
    if cfg.shuffle_dataset:
        ds = ds.shuffle(seed=cfg.shuffle_seed)
    if cfg.max_samples:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    if cfg.train_test_split < 1.0 and len(ds) > 1:
        split = ds.train_test_split(train_size=cfg.train_test_split, seed=cfg.shuffle_seed)
        return split["train"], split["test"]
    return ds, None
