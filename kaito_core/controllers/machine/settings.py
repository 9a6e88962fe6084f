"""Settings of the Machine controller and its garbage collector."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MachineControllerSettings"]


class MachineControllerSettings(BaseModel):
    """How Machines become nodes: timeouts, polling, retries and leak collection."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    workers: int = Field(default=10, ge=1)
    """Machines reconciled at once (a provisioner's ``create`` may take minutes)."""
    launch_timeout: float = Field(default=600.0, gt=0)
    """Seconds from the start of an attempt until the provisioner must have launched an
    instance (``status.providerID``). Past it the Machine gets Launched=False/LaunchTimeout,
    whatever was made is deleted, and a fresh attempt starts."""
    registration_timeout: float = Field(default=900.0, gt=0)
    """Seconds from the start of an attempt until the instance's Node must have joined.
    Past it: Registered=False/RegistrationTimeout, the instance is deleted, a fresh attempt starts."""
    poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between checks while waiting on the provider (Node events usually come first)."""
    retry_backoff_max: float = Field(default=300.0, gt=0)
    """Cap (seconds) on the wait between retries of a failing ``create``; the wait starts at the
    error's ``retry_after`` and doubles with each consecutive failure."""
    require_gpus: bool = True
    """Initialized needs allocatable ``nvidia.com/gpu`` on the Node (the Machine's request, else one)."""
    machine_selector: str | None = None
    """Reconcile only Machines matching this label selector (None: all). Lets two operators, or
    tests, share a cluster."""
    gc_enabled: bool = True
    """Run the garbage collector that deletes provider nodes whose Machine is gone."""
    gc_interval: float = Field(default=120.0, gt=0)
    """Seconds between garbage collection passes."""
    gc_grace_period: float = Field(default=300.0, ge=0)
    """A leaked node is collected only once it is at least this old (seconds): a Machine being
    created right now is not yet visible to every reader."""
