"""Real nodes for the local control plane: kubelet + containerd + runc + CNI bridge.

kwok marks pods Running without running anything; a :class:`RealNode` runs them.
Each node is a kubelet and a containerd of its own (built from source by
:func:`~kaito_core.testing.build_node.ensure_node_binaries`), Debian's runc, and the
CNI bridge plugin, all inside one private network namespace per
:class:`RealNodes` (see :mod:`kaito_core.testing.netns`):

* node ``n`` registers ``10.231.0.<n>`` (an address of the namespace's ``knodes``
  device) and binds its kubelet there;
* its pods get ``10.232.<n>.0/24`` on the bridge ``kbr<n>``;
* the kubelet reaches the apiserver through a proxy listening on the
  namespace's ``127.0.0.1``, so the apiserver's certificate (issued for
  127.0.0.1) is valid unchanged.

What the host allows shapes the configuration: cgroups are v1 (with a v2 mount),
so the kubelet runs ``cgroupfs`` with ``failCgroupV1: false`` and no QoS
cgroups; ``CAP_SYS_RESOURCE`` is missing, so containerd restricts OOM score
adjustments; no registry is reachable, so the sandbox image is a static
``pause`` binary packed here into an OCI archive and images come from podman's
storage (:meth:`RealNodes.load_image`), pods using ``imagePullPolicy: Never``
or ``IfNotPresent``.

The apiserver reaches the kubelets (their addresses live in the namespace) through
its egress proxy (:mod:`kaito_core.testing.egress`): each run registers its
namespace's networks with the control plane, so ``kubectl logs``, ``exec``,
``run -it`` and ``port-forward`` work as on any cluster. :meth:`RealNode.pod_log`
reads the log files the kubelet writes (the CRI log of each container) without
the apiserver.

:meth:`RealNodes.stop` removes everything a run made: processes (kubelet,
containerd, shims, containers, kube-proxy), mounts under the run's folder,
container cgroups (``/k8s.io/<id>``), the network namespace with every link and
iptables rule in it. A run whose owner was ``kill -9``-ed is swept by the next
one (:func:`sweep_stale_runs`).

Use::

    with RealNodes(cluster.kubeconfig) as nodes:          # root; the apiserver on 127.0.0.1
        nodes.load_image("localhost/kaito-curl:0.1.0")    # podman -> every node's containerd
        (gpu,) = nodes.start([NodeSpec("gpu-a", labels={"accelerator": "nvidia"},
                                       taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                                       extended_resources={"nvidia.com/gpu": "1"})])
        ...                                               # pods with imagePullPolicy: Never
        gpu.pod_log("ns", "pod", "container")
        gpu.kill_kubelet(); gpu.wait_not_ready(); gpu.start_kubelet(); gpu.wait_ready()

The parts: :mod:`.common` (addresses, process and mount helpers, CRI logs), :mod:`.spec` (:class:`NodeSpec`,
the kubeconfig read), :mod:`.pause` (the sandbox image), :mod:`.config` (one node's config files),
:mod:`.node` (:class:`RealNode`), :mod:`.services` (kube-proxy and CoreDNS), :mod:`.sweep` (cgroups and
stale runs) and :mod:`.nodes` (:class:`RealNodes`).
"""

from kaito_core.testing.realnode.common import (
    CLUSTER_DNS_IP,
    HOST_SERVICES_IP,
    mounts_under,
    parse_cri_log,
    processes_mentioning,
)
from kaito_core.testing.realnode.node import RealNode
from kaito_core.testing.realnode.nodes import RealNodes
from kaito_core.testing.realnode.pause import pause_image_ref
from kaito_core.testing.realnode.spec import NodeSpec
from kaito_core.testing.realnode.sweep import cgroup_dirs, sweep_stale_runs

__all__ = [
    "CLUSTER_DNS_IP",
    "HOST_SERVICES_IP",
    "NodeSpec",
    "RealNode",
    "RealNodes",
    "cgroup_dirs",
    "mounts_under",
    "parse_cri_log",
    "pause_image_ref",
    "processes_mentioning",
    "sweep_stale_runs",
]
