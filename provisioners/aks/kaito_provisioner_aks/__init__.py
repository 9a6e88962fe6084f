"""kaito-core provisioner plugin: aks (not built yet)."""

__all__: list[str] = []
