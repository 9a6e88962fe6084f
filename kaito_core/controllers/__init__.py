"""Reconcilers: workspace/ and machine/ (built on kaito_core.engine)."""

__all__: list[str] = []
