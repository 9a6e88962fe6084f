"""kaito-core: large AI models on Kubernetes, as a controller-runtime-style asyncio library.

The public face. Operator users run ``kaito up`` / ``kaito controller``; embedders
and plugin authors import from here (or from the subpackages' own ``__all__``):

* the operator: :class:`Operator`, :class:`OperatorSettings`
* the API: :class:`Workspace`, :class:`Machine`, :func:`validate_workspace`, :func:`check_workspace`
* the engine: :class:`Manager`, :class:`Controller`, :class:`Client`, :class:`Request`, :class:`Result`
* provisioner plugins: :class:`Provisioner`, :class:`NodeRef`, :class:`ProvisionerContext`
* every error class, whose tree is documented in ``docs/reference/errors.md``

Layers (an import only goes down): cli -> manager -> controllers -> provisioning -> api -> engine.
"""

from importlib.metadata import PackageNotFoundError, version

from kaito_core.api import (
    FieldError,
    Machine,
    Workspace,
    WorkspaceValidationError,
    check_workspace,
    validate_workspace,
)
from kaito_core.engine import (
    AlreadyExistsError,
    APIConnectionError,
    APIError,
    CacheNotWatchingError,
    CacheSyncTimeoutError,
    Client,
    ConflictError,
    Controller,
    ForbiddenError,
    GoneError,
    InvalidError,
    LeaderElectionLostError,
    Manager,
    NotFoundError,
    Reconciler,
    Request,
    RequestTimeoutError,
    Result,
    ServerError,
    TerminalError,
    TooManyRequestsError,
    UnauthorizedError,
)
from kaito_core.manager import Operator, OperatorSettings
from kaito_core.provisioning import (
    InstanceTypeUnavailableError,
    InsufficientCapacityError,
    NodeRef,
    Provisioner,
    ProvisionerContext,
    ProvisionerError,
    ProvisionerNotFoundError,
    QuotaExceededError,
    RetryableError,
    UnknownProvisionerError,
    load_provisioner,
)

try:
    __version__ = version("kaito-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "AlreadyExistsError",
    "CacheNotWatchingError",
    "CacheSyncTimeoutError",
    "Client",
    "ConflictError",
    "Controller",
    "FieldError",
    "ForbiddenError",
    "GoneError",
    "InstanceTypeUnavailableError",
    "InsufficientCapacityError",
    "InvalidError",
    "LeaderElectionLostError",
    "Machine",
    "Manager",
    "NodeRef",
    "NotFoundError",
    "Operator",
    "OperatorSettings",
    "Provisioner",
    "ProvisionerContext",
    "ProvisionerError",
    "ProvisionerNotFoundError",
    "QuotaExceededError",
    "Reconciler",
    "Request",
    "RequestTimeoutError",
    "Result",
    "RetryableError",
    "ServerError",
    "TerminalError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnknownProvisionerError",
    "Workspace",
    "WorkspaceValidationError",
    "__version__",
    "check_workspace",
    "load_provisioner",
    "validate_workspace",
]
