"""Every subpackage's public face is pinned, name by name: adding or removing a public name is a decision the
diff shows (the top level and its error tree: test_public_api.py)."""

from __future__ import annotations

import importlib

import pytest

PINNED: dict[str, set[str]] = {
    "kaito_core.api": {
        "ANNOTATION_API_KEY_SECRET", "ANNOTATION_BYPASS_RESOURCE_CHECKS", "ANNOTATION_ENABLE_LB",
        "ANNOTATION_MODEL_WEIGHTS", "ANNOTATION_NODE_IMAGE_FAMILY", "ANNOTATION_REVISION", "ANNOTATION_RUNTIME",
        "AccessMode", "AdapterSpec", "CATEGORY", "CONDITION_FALSE", "CONDITION_TRUE", "CONDITION_UNKNOWN",
        "Condition", "ConditionStatus", "DataDestination", "DataSource", "FieldError", "GPU_RESOURCE", "GPU_TAINT",
        "GPU_TAINT_EFFECT", "GPU_TAINT_KEY", "GPU_TAINT_VALUE", "GROUP", "InferenceSpec", "KubeModel",
        "LABEL_INSTALL", "LABEL_INSTANCE_TYPE", "LABEL_MACHINE", "LABEL_MACHINE_TYPE", "LABEL_WORKSPACE",
        "LABEL_WORKSPACE_NAMESPACE", "LabelSelector", "LabelSelectorRequirement", "MACHINE_API_VERSION",
        "MACHINE_CONDITION_TYPES", "MACHINE_FINALIZER", "MACHINE_KIND", "MACHINE_PLURAL", "MACHINE_SINGULAR",
        "MACHINE_TIMEOUT_REASONS", "MACHINE_VERSION", "MAX_ADAPTERS", "MAX_NODE_COUNT", "Machine",
        "MachineConditionType", "MachineReason", "MachineResources", "MachineSpec", "MachineStatus", "Messages",
        "NodeSelectorRequirement", "ObjectMeta", "PresetOptions", "PresetSpec", "Quantity", "ResourceSpec", "Rule",
        "STORAGE_VERSION", "Taint", "TuningMethod", "TuningSpec", "V1ALPHA1", "V1BETA1", "WEBHOOK_NAME",
        "WEBHOOK_PATH", "WEIGHTS_KIND_HUGGINGFACE", "WEIGHTS_KIND_OCI", "WEIGHTS_KIND_VOLUME",
        "WORKSPACE_API_VERSION", "WORKSPACE_CONDITION_TYPES", "WORKSPACE_FINALIZER", "WORKSPACE_KIND",
        "WORKSPACE_PLURAL", "WORKSPACE_SHORT_NAMES", "WORKSPACE_SINGULAR", "WORKSPACE_VERSIONS", "WebhookServer",
        "WeightsSource", "Workspace", "WorkspaceConditionType", "WorkspaceReason", "WorkspaceState",
        "WorkspaceStatus", "WorkspaceV1Alpha1", "WorkspaceValidationError", "admission_review", "check_workspace",
        "get_condition", "is_condition_true", "machine_ready", "make_webhook_app", "now_rfc3339",
        "parse_weights_source", "parse_workspace", "set_condition", "url_problem", "validate_workspace",
        "validating_webhook_configuration",
    },
    "kaito_core.api.validation": {
        "NODE_IMAGE_FAMILIES", "RESERVED_SELECTOR_LABELS", "SAFE_VOLUME_KINDS", "check_workspace", "parse_workspace",
        "resolve_runtime", "url_problem", "validate_workspace",
    },
    "kaito_core.cli": {
        "build_parser", "main",
    },
    "kaito_core.controllers.machine": {
        "ANNOTATION_ATTEMPT", "ANNOTATION_ATTEMPT_STARTED", "CONTROLLER_NAME", "MachineController",
        "MachineControllerSettings", "MachineGarbageCollector", "MachineReconciler", "ProvisionerHandle",
        "add_machine_controller", "machine_for_ref",
    },
    "kaito_core.controllers.workspace": {
        "CONTROLLERREVISION", "MACHINE", "WORKSPACE", "WorkspaceReconciler", "WorkspaceSettings",
        "add_workspace_controller", "workspace_controller",
    },
    "kaito_core.engine": {
        "APIConnectionError", "APIError", "AlreadyExistsError", "ApiClientTransport", "BucketRateLimiter",
        "CONFIGMAP", "CRD", "CacheNotWatchingError", "CacheSyncTimeoutError", "Client", "Clock", "ConflictError",
        "Controller", "ControllerBuilder", "DAEMONSET", "DEFAULT_FIELD_MANAGER", "DEPLOYMENT", "EVENT",
        "EngineMetrics", "EnqueueForObject", "EnqueueForOwner", "EnqueueMapped", "EventHandler", "EventRecorder",
        "EventType", "FakeClock", "ForbiddenError", "FuncHandler", "GoneError", "HealthServer",
        "INDEX_CONTROLLER_UID", "INDEX_LABEL", "INDEX_NAMESPACE", "INDEX_OWNER_UID", "IndexFunc", "Informer",
        "InvalidError", "ItemBackoff", "ItemExponentialFailureRateLimiter", "JOB", "LEASE", "LabelSelector",
        "LeaderElectionLostError", "LeaderElectionSettings", "LeaderElector", "LoopClock", "Manager",
        "ManagerSettings", "MapFunc", "MaxOfRateLimiter", "Meta", "MockTransport", "NAMESPACE", "NODE",
        "NotFoundError", "ObjectList", "PERSISTENTVOLUMECLAIM", "POD", "PatchType", "Predicate", "RateLimiter",
        "RawResponse", "Reconciler", "Request", "RequestTimeoutError", "ResourceKind", "Result", "RetryPolicy",
        "Runnable", "SECRET", "SERVICE", "SERVICEACCOUNT", "STATEFULSET", "ServerError", "SharedCache",
        "ShutDownError", "Store", "StreamResponse", "TerminalError", "TooManyRequestsError", "Transport",
        "TransportRequest", "UnauthorizedError", "Watch", "WatchEvent", "WorkQueue", "and_", "annotations_changed",
        "condition_of", "conditions_of", "configure_logging", "controller_owner", "default_rate_limiter",
        "error_from_response", "generation_changed", "get_logger", "json_response", "keep_fields", "kind_of",
        "label_index", "labels_changed", "meta", "not_", "not_just_a_heartbeat", "object_key", "or_",
        "parse_selector", "predicate", "resource_version_changed", "soonest", "spec_of", "status_of",
        "strip_managed_fields",
    },
    "kaito_core.manager": {
        "Operator", "OperatorSettings", "WebhookCertManager", "WebhookEndpoint", "WebhookSettings",
    },
    "kaito_core.provisioning": {
        "BYOProvisioner", "BYOSettings", "ENTRY_POINT_GROUP", "InstanceTypeInfo", "InstanceTypeUnavailableError",
        "InsufficientCapacityError", "KWOK_ANNOTATION", "LABEL_PROVISIONER", "MACHINE", "NoMatchingNodeError",
        "NodeCheck", "NodeProblem", "NodeRef", "Provisioner", "ProvisionerContext", "ProvisionerError",
        "ProvisionerHandle", "ProvisionerNotFoundError", "ProvisionerSettings", "QuotaExceededError",
        "RetryableError", "SimulatedProvisioner", "SimulatedSettings", "SupportsInstanceTypes",
        "UnknownProvisionerError", "allocatable_gpus", "available_provisioners", "load_provisioner",
        "machine_gpu_request", "node_is_ready", "node_labels_for", "node_problem", "node_taints_for", "parse_count",
        "parse_quantity", "parse_timestamp", "requirement_problem", "taint_matches",
    },
    "kaito_core.testing": {
        "Cluster", "ControlPlane", "ControlPlaneMode", "ETCD_VERSION", "ExistingCluster", "GPU_RESOURCE", "GPU_TAINT",
        "KUBERNETES_VERSION", "KWOK_VERSION", "ToolchainMissingError", "asset_dir", "cluster_from_environment",
        "condition", "condition_is_true", "create_gpu_node", "ensure_binaries", "eventually", "free_port",
        "gpu_node_manifest", "install_crds", "running_manager", "wait_for_node_ready",
    },
    "kaito_core.testing.realnode": {
        "CLUSTER_DNS_IP", "HOST_SERVICES_IP", "NodeSpec", "RealNode", "RealNodes", "cgroup_dirs", "mounts_under",
        "parse_cri_log", "pause_image_ref", "processes_mentioning", "sweep_stale_runs",
    },
}


@pytest.mark.parametrize("module", sorted(PINNED))
def test_the_subpackage_exports_exactly_its_pinned_names(module: str) -> None:
    package = importlib.import_module(module)
    assert set(package.__all__) == PINNED[module]
    assert len(package.__all__) == len(set(package.__all__)), "a name listed twice"
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing, f"listed but not defined: {missing}"


def test_every_subpackage_is_pinned() -> None:
    import pkgutil

    import kaito_core

    packages = {info.name for info in pkgutil.walk_packages(kaito_core.__path__, "kaito_core.") if info.ispkg}
    # kaito_core.controllers is only a folder of the two controllers; it exports nothing itself.
    assert packages - {"kaito_core.controllers"} == set(PINNED)
