"""``kaito up --real-nodes``: the local control plane with real kubelet nodes, so pods really run.

What it adds to the embedded default (see :mod:`kaito_core.cli.up`):

* the ``realnode`` provisioner: a Machine becomes a kubelet + containerd + runc
  node inside a network namespace of this run, with the runtime image this tree
  builds (``kaito-runtime``) imported before its kubelet starts;
* one untainted system node (``kaito-system-0``), where pods without GPU
  tolerations land (the walkthrough's ``kubectl run ... curl``);
* two local registries (Debian's ``docker-registry`` on loopback, reached
  inside the namespace at ``HOST_SERVICES_IP``): the *image* registry holds our
  images (``kaito-core/kaito-runtime``, and our Debian curl image as
  ``curlimages/curl``) and keeps its data between runs under the cache, so a
  code change pushes only the runtime's top layer; the *artifact* registry,
  fresh each run, holds stand-in weights for the presets the applied files
  name, stand-in adapters for the adapter images they name, and what tuning
  Jobs push. containerd pulls every registry's images from the image registry
  and from nowhere else; the kubelets really pull the runtime image;
* a dataset mirror answering every tuning download with a small parquet;
* operator settings that send every registry (``"*"``) and every download host
  there, so the seed examples apply unchanged.

Nothing leaves the machine: the namespace has no route out, and the mirrors take
every name. Stopping removes the nodes, their processes, mounts and namespace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path

from kaito_core.controllers.machine.settings import MachineControllerSettings
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.provisioning.realnode import RealNodeProvisioner, RealNodeSettings
from kaito_core.testing.build import cache_root
from kaito_core.testing.controlplane import ControlPlane
from kaito_core.testing.images import ensure_images
from kaito_core.testing.realnode import HOST_SERVICES_IP, NodeSpec, RealNodes
from kaito_core.testing.registry import LocalRegistry
from kaito_core.testing.standins import (
    STANDIN_NOTICE,
    DatasetMirror,
    publish_adapter,
    publish_weights,
    seed_needs,
)

__all__ = ["DEFAULT_PRESETS", "SYSTEM_NODE", "RealNodeStack"]

SYSTEM_NODE = "kaito-system-0"
#: Presets with stand-in weights even when no applied file names them (the seed walkthrough's).
DEFAULT_PRESETS = ("phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct")
CURL_IMAGE = "curlimages/curl:latest"
IMAGE_REPOSITORY = "kaito-core"


def _say(message: str) -> None:
    print(f"kaito up: {message}", flush=True)


class RealNodeStack:
    """Everything ``--real-nodes`` runs beside the control plane; :meth:`stop` removes all of it."""

    def __init__(self, plane: ControlPlane, state_dir: Path, apply: Iterable[Path] = ()):
        self.plane = plane
        self.state_dir = state_dir
        self.apply = list(apply)
        self.registry = LocalRegistry(state_dir / "registry")
        self.image_registry = LocalRegistry(cache_root() / "registry-images")
        self.nodes: RealNodes | None = None
        self.mirror: DatasetMirror | None = None
        self.provisioner: RealNodeProvisioner | None = None
        self.workspace_settings: WorkspaceSettings | None = None
        # A node pulls a 6.5 GB image (minutes on two cores, more with three at once): the Machine
        # controller's default launch timeout would recycle it before it joins.
        self.machine_settings = MachineControllerSettings(launch_timeout=3600, registration_timeout=3600,
                                                          poll_interval=2)
        self.published: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def _timed(self, what: str, began: float) -> None:
        self.timings[what] = round(time.monotonic() - began, 1)

    def start(self) -> None:
        """Build (or find) the images, start the registry, the mirror, the system node; publish stand-ins."""
        began = time.monotonic()
        _say("building our images if the tree changed (kaito-runtime, kaito-curl)...")
        images = ensure_images(("runtime", "curl"), archives=False)
        runtime, curl = images["runtime"].tag, images["curl"].tag
        self._timed("images_s", began)

        self.registry.start()
        self.image_registry.start()
        nodes = self.nodes = RealNodes(self.plane.kubeconfig)
        registry_inside = nodes.expose_host_port(self.registry.port)
        images_inside = nodes.expose_host_port(self.image_registry.port)
        self.mirror = DatasetMirror(self.state_dir)
        dataset_inside = nodes.expose_host_port(self.mirror.port)
        nodes.mirror_registries(images_inside)  # containerd: every registry's images from ours only

        began = time.monotonic()
        _say("pushing our images to the local image registry (the first time: minutes; then the changed layers)")
        runtime_tag = runtime.rsplit(":", 1)[1]
        self.image_registry.push_podman_image(runtime, f"{IMAGE_REPOSITORY}/kaito-runtime:{runtime_tag}",
                                              compression="zstd")
        self.image_registry.push_podman_image(curl, CURL_IMAGE)
        self._timed("push_images_s", began)

        began = time.monotonic()
        needs = seed_needs(self.apply, DEFAULT_PRESETS)
        standins = self.state_dir / "standins"
        self.published = publish_weights(self.registry.host, needs.presets, standins)
        for image, preset in needs.adapters.items():
            self.published[image] = publish_adapter(self.registry.host, image, preset, standins)
        self._timed("standins_s", began)
        _say(f"stand-ins published in the local registry: {', '.join(sorted(self.published))}")
        _say(STANDIN_NOTICE)

        began = time.monotonic()
        nodes.start([NodeSpec(SYSTEM_NODE, labels={"kaito.sh/role": "system"}, images=False)])
        self._timed("system_node_s", began)
        _say(f"real nodes: network namespace {nodes.netns.name}, folder {nodes.workdir}; local registry "
             f"{self.registry.host} (inside the nodes: {registry_inside}), image registry {self.image_registry.host} "
             f"(inside: {images_inside})")
        self.workspace_settings = WorkspaceSettings(
            image_registry=f"{images_inside}/{IMAGE_REPOSITORY}",
            image_tag=runtime_tag,
            weights_registry=f"{registry_inside}/kaito",
            default_runtime="transformers",  # CPU nodes: vLLM needs a GPU
            insecure_registries=[HOST_SERVICES_IP],
            registry_mirrors={"*": registry_inside},
            url_mirrors={"*": f"http://{dataset_inside}"},
        )
        self.provisioner = RealNodeProvisioner(RealNodeSettings(start_timeout=1200), nodes=nodes)

    def stop(self) -> None:
        if self.nodes is not None:
            with contextlib.suppress(Exception):
                self.nodes.stop()
            self.nodes = None
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None
        self.registry.stop()
        self.image_registry.stop()
