"""kaito-core presets: model and GPU SKU catalogs and the in-pod runtimes."""

__all__: list[str] = []
