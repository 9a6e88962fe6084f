"""Structured logs (structlog): one JSON line per event, fields bound per reconcile.

Every reconcile's lines carry ``controller``, ``namespace``, ``name`` and a short
``reconcile_id``, so one object's history greps out of a busy log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Set up structlog (JSON lines or a console renderer) over the stdlib root logger."""
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger with ``logger=name`` and any fields bound."""
    return structlog.get_logger(name).bind(logger=name, **bound)
