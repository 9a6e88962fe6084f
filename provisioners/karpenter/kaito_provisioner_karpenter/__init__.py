"""kaito-core provisioner plugin: karpenter (not built yet)."""

__all__: list[str] = []
