"""Names the whole operator agrees on: group, versions, labels, annotations, finalizers."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANNOTATION_API_KEY_SECRET",
    "ANNOTATION_BYPASS_RESOURCE_CHECKS",
    "ANNOTATION_ENABLE_LB",
    "ANNOTATION_NODE_IMAGE_FAMILY",
    "ANNOTATION_REVISION",
    "ANNOTATION_RUNTIME",
    "CATEGORY",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "GPU_TAINT_EFFECT",
    "GPU_TAINT_KEY",
    "GPU_TAINT_VALUE",
    "GROUP",
    "LABEL_INSTALL",
    "LABEL_INSTANCE_TYPE",
    "LABEL_MACHINE",
    "LABEL_MACHINE_TYPE",
    "LABEL_WORKSPACE",
    "LABEL_WORKSPACE_NAMESPACE",
    "MACHINE_API_VERSION",
    "MACHINE_FINALIZER",
    "MACHINE_KIND",
    "MACHINE_PLURAL",
    "MACHINE_SINGULAR",
    "MACHINE_VERSION",
    "MAX_ADAPTERS",
    "MAX_NODE_COUNT",
    "STORAGE_VERSION",
    "V1ALPHA1",
    "V1BETA1",
    "WEBHOOK_NAME",
    "WEBHOOK_PATH",
    "WORKSPACE_API_VERSION",
    "WORKSPACE_FINALIZER",
    "WORKSPACE_KIND",
    "WORKSPACE_PLURAL",
    "WORKSPACE_SHORT_NAMES",
    "WORKSPACE_SINGULAR",
    "WORKSPACE_VERSIONS",
]

GROUP: Final = "kaito.sh"
V1ALPHA1: Final = "v1alpha1"
V1BETA1: Final = "v1beta1"
#: Served Workspace versions, oldest first. Both have the same schema (conversion strategy None).
WORKSPACE_VERSIONS: Final = (V1ALPHA1, V1BETA1)
#: The version the apiserver stores Workspaces in; the models default to it.
STORAGE_VERSION: Final = V1BETA1
WORKSPACE_API_VERSION: Final = f"{GROUP}/{STORAGE_VERSION}"
WORKSPACE_KIND: Final = "Workspace"
WORKSPACE_PLURAL: Final = "workspaces"
WORKSPACE_SINGULAR: Final = "workspace"
WORKSPACE_SHORT_NAMES: Final = ("wk", "wks")
CATEGORY: Final = "kaito"

MACHINE_VERSION: Final = V1ALPHA1
MACHINE_API_VERSION: Final = f"{GROUP}/{MACHINE_VERSION}"
MACHINE_KIND: Final = "Machine"
MACHINE_PLURAL: Final = "machines"
MACHINE_SINGULAR: Final = "machine"

# Labels. A Machine (cluster-scoped) points back at its Workspace with the two workspace labels.
LABEL_WORKSPACE: Final = f"{GROUP}/workspace"
LABEL_WORKSPACE_NAMESPACE: Final = f"{GROUP}/workspacenamespace"
#: On a Node: the name of the Machine it was provisioned for.
LABEL_MACHINE: Final = f"{GROUP}/machine"
#: On a Node and a Machine: what kind of machine it is ("gpu").
LABEL_MACHINE_TYPE: Final = f"{GROUP}/machine-type"
#: On a Machine, its Node and its provider resource (an agent pool also as the ARM tag
#: ``kaito-install``): which operator install made it (:mod:`kaito_core.provisioning.identity`).
#: The leak collector deletes only what carries its own install's value.
LABEL_INSTALL: Final = f"{GROUP}/install"
#: The well-known Node label holding the instance type (VM size).
LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"

# Finalizers.
WORKSPACE_FINALIZER: Final = "workspace.finalizer.kaito.sh"
MACHINE_FINALIZER: Final = "machine.finalizer.kaito.sh"

# Annotations.
#: On a Workspace: the runtime to serve a preset with ("vllm" or "transformers").
ANNOTATION_RUNTIME: Final = f"{GROUP}/runtime"
#: On a Workspace: "true" exposes the inference Service through a LoadBalancer (for testing).
ANNOTATION_ENABLE_LB: Final = f"{GROUP}/enablelb"
#: On a Workspace: the Secret (in its namespace, key ``api-key``) holding the bearer token clients
#: of the inference server must send; ``none`` serves without one. Unset with ``enablelb``: the
#: operator makes ``<workspace>-api-key`` (a public endpoint never starts open).
ANNOTATION_API_KEY_SECRET: Final = f"{GROUP}/api-key-secret"
#: On a Workspace and its children: the revision of the spec they were made from.
ANNOTATION_REVISION: Final = f"{GROUP}/revision"
#: On a Workspace or Machine: the node image family the provisioner should use (e.g. Ubuntu, AzureLinux).
ANNOTATION_NODE_IMAGE_FAMILY: Final = f"{GROUP}/node-image-family"
#: On a Workspace: "true" skips the GPU memory/count checks and the instance-type lookup
#: (for nodes you bring yourself that the SKU catalog does not know).
ANNOTATION_BYPASS_RESOURCE_CHECKS: Final = f"{GROUP}/bypass-resource-checks"

# GPU nodes.
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_TAINT_KEY: Final = "sku"
GPU_TAINT_VALUE: Final = "gpu"
GPU_TAINT_EFFECT: Final = "NoSchedule"
#: The taint every GPU node carries (``sku=gpu:NoSchedule``), as a Kubernetes Taint dict.
GPU_TAINT: Final = {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}

MAX_ADAPTERS: Final = 10
#: The most GPU nodes one Workspace may ask for (``resource.count``; the CRD and the validator say so).
MAX_NODE_COUNT: Final = 64

# Admission webhook.
WEBHOOK_NAME: Final = "validation.workspace.kaito.sh"
WEBHOOK_PATH: Final = "/validate-workspace"
