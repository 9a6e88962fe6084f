"""Settings of the Workspace controller (pydantic): images, runtimes, limits. One docstring per field."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_IMAGE_REGISTRY", "RUNTIME_VERSION", "WeightsCacheSettings", "WorkspaceSettings"]

#: Where kaito-core's own images are published unless a platform team sets its registry.
DEFAULT_IMAGE_REGISTRY = "ghcr.io/kaito-core"
#: The version the runtime images are tagged with (kaito-presets' version: the runtimes ship in it).
RUNTIME_VERSION = version("kaito-presets")


class WeightsCacheSettings(BaseModel):
    """A PersistentVolumeClaim per Workspace that keeps its downloaded weights."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    storage_class: str | None = None
    """StorageClass of the claims (None: the cluster's default class)."""
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = "ReadWriteMany"
    """Access mode; ReadWriteMany lets replicas on several nodes share one download."""
    size: str | None = None
    """Requested size (a quantity such as ``100Gi``); None: the preset's disk figure."""


class WorkspaceSettings(BaseModel):
    """How the Workspace controller builds nodes, inference and tuning workloads."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    image_registry: str = DEFAULT_IMAGE_REGISTRY
    """Registry (and path) of kaito-core's runtime images (``kaito-runtime``, ``kaito-runtime-vllm``):
    where a platform team pushed what ``nox -s images -- --push REGISTRY`` built."""
    image_tag: str = RUNTIME_VERSION
    """Tag of kaito-core's runtime images (default: this release's version)."""
    runtime_images: dict[str, str] = Field(default_factory=dict)
    """A full image per runtime, overriding ``image_registry``/``image_tag``, e.g.
    ``{"vllm": "myregistry.io/kaito-runtime-vllm:0.1.0"}``."""
    weights_registry: str = "mcr.microsoft.com/aks/kaito"
    """Registry (and path) of the presets' weights artifacts, ``<weights_registry>/kaito-<preset>:<tag>``
    in Kaito's (ModelPack) layout; by default Kaito's published artifacts, as they are."""
    weights_tags: dict[str, str] = Field(default_factory=dict)
    """Per-preset override of the weights artifact's tag (default: the catalog's ``weights.tag``)."""
    huggingface_endpoint: str | None = None
    """``HF_ENDPOINT`` for weights downloaded from Hugging Face (a mirror or proxy); None: the Hub."""
    weights_cache: WeightsCacheSettings | None = None
    """Keep downloaded weights in a PersistentVolumeClaim per Workspace instead of an ``emptyDir``,
    so a restarted or second replica does not download them again. None: ``emptyDir``."""
    insecure_registries: list[str] = Field(default_factory=list)
    """Registry hosts the runtimes' pull and push tools reach over plain HTTP (an in-cluster registry
    without TLS); loopback registries always are."""
    url_mirrors: dict[str, str] = Field(default_factory=dict)
    """Host -> mirror base URL for the tuning input downloader, e.g. ``{"huggingface.co": "http://mirror:8080"}``:
    a URL on that host is fetched from the mirror (same path and query); the mirror may be private.
    ``"*"`` stands for every host not listed (``kaito up --real-nodes`` sends every download to its mirror)."""
    registry_mirrors: dict[str, str] = Field(default_factory=dict)
    """Registry host -> the host to use instead, for every artifact and image the runtimes pull or push
    (weights, adapters, tuning output), e.g. ``{"ACR_REPO_HERE.azurecr.io": "127.0.0.1:5000"}``;
    ``"*"`` stands for every registry not listed."""
    default_runtime: str | None = None
    """Runtime when a Workspace has no ``kaito.sh/runtime`` annotation (None: the preset's own default)."""
    workers: int = 16
    """Workspaces reconciled concurrently (never two reconciles of the same Workspace at once)."""
    requeue_seconds: float = 15.0
    """How often a Workspace that is not yet ready is looked at again even without events (a safety net)."""
    status_detail_after_seconds: float = Field(default=30.0, ge=0)
    """How long ResourceReady names the Machines it waits for in one steady message before it echoes
    each Machine's own words (launched, registered, tainted, ...): a quick wait costs one status write,
    a slow one says why."""
    teardown_poll_seconds: float = 2.0
    """How often a deleting Workspace checks whether its Machines are gone."""
    machine_create_batch: int = Field(default=8, ge=1)
    """Machines one reconcile of a Workspace creates at most (each is a GPU VM); the rest follow on the next
    passes, which the new Machines' events bring at once: a large ``count`` never becomes one burst of
    cloud calls."""
    revision_history: int = 10
    """ControllerRevisions kept per Workspace."""
    download_max_bytes: int = 10 * 1024**3
    """Size limit of each file the tuning input downloader fetches (bytes)."""
    download_attempts: int = 4
    """Tries per URL of the tuning input downloader (retries with backoff)."""
    download_deadline_seconds: float = Field(default=3600.0, gt=0)
    """Total time the tuning input downloader gives each file, every retry included (a socket timeout alone
    lets a server that drips its body a byte at a time hold the GPU node for ever)."""
    tuning_backoff_limit: int = 0
    """``backoffLimit`` of tuning Jobs: a failed trainer is reported, not retried blindly."""
    tuning_active_deadline_seconds: int | None = Field(default=2 * 24 * 3600, gt=0)
    """``activeDeadlineSeconds`` of tuning Jobs: a Job still running after this long (downloads, training,
    push) is stopped and reported failed, so nothing holds a GPU node for ever. Two days by default; raise it
    for longer trainings, or None for no deadline."""
    shm_size: str | None = None
    """Size limit of the ``/dev/shm`` memory volume (None: no limit, bounded by the pod's memory)."""
    probe_initial_delay_seconds: int = 0
    """Initial delay of the inference liveness probe; the startup probe covers model loading."""
    startup_timeout_seconds: int = 1800
    """How long an inference pod may take to load its model before the kubelet restarts it."""
