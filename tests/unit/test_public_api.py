"""The public face of kaito_core is pinned: adding or removing a name is a decision, not an accident."""

from __future__ import annotations

import kaito_core
from kaito_core import provisioning, testing

PINNED = {
    "APIConnectionError", "APIError", "AlreadyExistsError", "CacheNotWatchingError", "CacheSyncTimeoutError",
    "Client", "ConflictError", "Controller", "FieldError", "ForbiddenError", "GoneError",
    "InstanceTypeUnavailableError", "InsufficientCapacityError", "InvalidError", "LeaderElectionLostError",
    "Machine", "Manager", "NodeRef", "NotFoundError", "Operator", "OperatorSettings", "Provisioner",
    "ProvisionerContext", "ProvisionerError", "ProvisionerNotFoundError", "QuotaExceededError", "Reconciler",
    "Request", "RequestTimeoutError", "Result", "RetryableError", "ServerError", "TerminalError",
    "TooManyRequestsError", "UnauthorizedError", "UnknownProvisionerError", "Workspace",
    "WorkspaceValidationError", "__version__", "check_workspace", "load_provisioner", "validate_workspace",
}


def test_top_level_names_are_pinned() -> None:
    assert set(kaito_core.__all__) == PINNED
    for name in kaito_core.__all__:
        assert hasattr(kaito_core, name), name


def test_error_tree() -> None:
    # One root per concern, so callers can catch broadly or narrowly.
    for cls in (kaito_core.NotFoundError, kaito_core.ConflictError, kaito_core.TooManyRequestsError,
                kaito_core.ServerError, kaito_core.GoneError, kaito_core.InvalidError):
        assert issubclass(cls, kaito_core.APIError)
    assert issubclass(kaito_core.AlreadyExistsError, kaito_core.ConflictError)
    for cls in (kaito_core.QuotaExceededError, kaito_core.InsufficientCapacityError,
                kaito_core.InstanceTypeUnavailableError, kaito_core.RetryableError,
                kaito_core.ProvisionerNotFoundError):
        assert issubclass(cls, kaito_core.ProvisionerError)
    assert issubclass(kaito_core.WorkspaceValidationError, ValueError)


def test_plugin_and_testing_faces_export_what_they_list() -> None:
    for module in (provisioning, testing):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
