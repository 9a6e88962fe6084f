"""Settings of the Workspace controller (pydantic): images, runtimes, limits. One docstring per field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WorkspaceSettings"]


class WorkspaceSettings(BaseModel):
    """How the Workspace controller builds nodes, inference and tuning workloads."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    registry: str = "mcr.microsoft.com/aks/kaito"
    """Registry (and path) the preset images are pulled from."""
    image_tag: str = "0.1.0"
    """Tag of the preset model images (``<registry>/kaito-<preset>:<tag>``: runtime + weights at /workspace/weights)."""
    runtime_image_tags: dict[str, str] = Field(default_factory=dict)
    """Per-runtime tag override of the model image, e.g. ``{"vllm": "0.1.0-vllm"}`` (default: ``image_tag``)."""
    base_image: str = "mcr.microsoft.com/aks/kaito/kaito-base:0.1.0"
    """Image with the kaito_presets runtimes but no weights: downloads data, pulls and pushes adapters."""
    default_runtime: str | None = None
    """Runtime when a Workspace has no ``kaito.sh/runtime`` annotation (None: the preset's own default)."""
    workers: int = 16
    """Workspaces reconciled concurrently (never two reconciles of the same Workspace at once)."""
    requeue_seconds: float = 15.0
    """How often a Workspace that is not yet ready is looked at again even without events (a safety net)."""
    teardown_poll_seconds: float = 2.0
    """How often a deleting Workspace checks whether its Machines are gone."""
    revision_history: int = 10
    """ControllerRevisions kept per Workspace."""
    download_max_bytes: int = 10 * 1024**3
    """Size limit of each file the tuning input downloader fetches (bytes)."""
    download_attempts: int = 4
    """Tries per URL of the tuning input downloader (retries with backoff)."""
    tuning_backoff_limit: int = 0
    """``backoffLimit`` of tuning Jobs: a failed trainer is reported, not retried blindly."""
    shm_size: str | None = None
    """Size limit of the ``/dev/shm`` memory volume (None: no limit, bounded by the pod's memory)."""
    probe_initial_delay_seconds: int = 0
    """Initial delay of the inference liveness probe; the startup probe covers model loading."""
    startup_timeout_seconds: int = 1800
    """How long an inference pod may take to load its model before the kubelet restarts it."""
