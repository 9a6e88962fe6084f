"""kaito_core.engine: a controller-runtime-style operator engine on asyncio.

Generic: it knows nothing of Workspaces and runs any operator. Objects are
plain dicts reached through raw REST paths described by a :class:`ResourceKind`.

::

    mgr = await Manager.from_kubeconfig(settings=ManagerSettings(leader_election={"enabled": True}))
    mgr.add(Controller.for_(MY_KIND, generation_changed).owns(CONFIGMAP).with_workers(4)
            .build(MyReconciler(mgr.client, mgr.cache)))
    await mgr.run()
"""

from kaito_core.engine.builder import ControllerBuilder
from kaito_core.engine.cache import CacheNotWatchingError, SharedCache
from kaito_core.engine.client import DEFAULT_FIELD_MANAGER, Client, ObjectList, PatchType, RetryPolicy, WatchEvent
from kaito_core.engine.clock import Clock, FakeClock, LoopClock
from kaito_core.engine.controller import Controller, Watch
from kaito_core.engine.errors import (
    AlreadyExistsError,
    APIConnectionError,
    APIError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    error_from_response,
)
from kaito_core.engine.events import EventRecorder, EventType
from kaito_core.engine.handler import (
    EnqueueForObject,
    EnqueueForOwner,
    EnqueueMapped,
    MapFunc,
    controller_owner,
)
from kaito_core.engine.health import HealthServer
from kaito_core.engine.indexers import (
    INDEX_CONTROLLER_UID,
    INDEX_LABEL,
    INDEX_NAMESPACE,
    INDEX_OWNER_UID,
    IndexFunc,
    label_index,
)
from kaito_core.engine.informer import EventHandler, FuncHandler, Informer, strip_managed_fields
from kaito_core.engine.labels import LabelSelector, parse_selector
from kaito_core.engine.leader import LeaderElectionLostError, LeaderElector
from kaito_core.engine.logging import configure_logging, get_logger
from kaito_core.engine.manager import CacheSyncTimeoutError, Manager, Runnable
from kaito_core.engine.metrics import EngineMetrics
from kaito_core.engine.mock_transport import MockTransport, TransportRequest, json_response
from kaito_core.engine.objects import Meta, condition_of, conditions_of, meta, spec_of, status_of
from kaito_core.engine.predicate import (
    Predicate,
    and_,
    annotations_changed,
    generation_changed,
    labels_changed,
    not_,
    not_just_a_heartbeat,
    or_,
    predicate,
    resource_version_changed,
)
from kaito_core.engine.queue import ShutDownError, WorkQueue
from kaito_core.engine.ratelimit import (
    BucketRateLimiter,
    ItemBackoff,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_rate_limiter,
)
from kaito_core.engine.reconcile import Reconciler, Request, Result, TerminalError, soonest
from kaito_core.engine.resources import (
    CONFIGMAP,
    CRD,
    DAEMONSET,
    DEPLOYMENT,
    EVENT,
    JOB,
    LEASE,
    NAMESPACE,
    NODE,
    PERSISTENTVOLUMECLAIM,
    POD,
    SECRET,
    SERVICE,
    SERVICEACCOUNT,
    STATEFULSET,
    ResourceKind,
    kind_of,
    object_key,
)
from kaito_core.engine.settings import LeaderElectionSettings, ManagerSettings
from kaito_core.engine.store import Store
from kaito_core.engine.transforms import keep_fields
from kaito_core.engine.transport import ApiClientTransport, RawResponse, StreamResponse, Transport

__all__ = [
    "CONFIGMAP",
    "CRD",
    "DAEMONSET",
    "DEFAULT_FIELD_MANAGER",
    "DEPLOYMENT",
    "EVENT",
    "INDEX_CONTROLLER_UID",
    "INDEX_LABEL",
    "INDEX_NAMESPACE",
    "INDEX_OWNER_UID",
    "JOB",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "PERSISTENTVOLUMECLAIM",
    "POD",
    "SECRET",
    "SERVICE",
    "SERVICEACCOUNT",
    "STATEFULSET",
    "APIConnectionError",
    "APIError",
    "AlreadyExistsError",
    "ApiClientTransport",
    "BucketRateLimiter",
    "CacheNotWatchingError",
    "CacheSyncTimeoutError",
    "Client",
    "Clock",
    "ConflictError",
    "Controller",
    "ControllerBuilder",
    "EngineMetrics",
    "EnqueueForObject",
    "EnqueueForOwner",
    "EnqueueMapped",
    "EventHandler",
    "EventRecorder",
    "EventType",
    "FakeClock",
    "ForbiddenError",
    "FuncHandler",
    "GoneError",
    "HealthServer",
    "IndexFunc",
    "Informer",
    "InvalidError",
    "ItemBackoff",
    "ItemExponentialFailureRateLimiter",
    "LabelSelector",
    "LeaderElectionLostError",
    "LeaderElectionSettings",
    "LeaderElector",
    "LoopClock",
    "Manager",
    "ManagerSettings",
    "MapFunc",
    "MaxOfRateLimiter",
    "Meta",
    "MockTransport",
    "NotFoundError",
    "ObjectList",
    "PatchType",
    "Predicate",
    "RateLimiter",
    "RawResponse",
    "Reconciler",
    "Request",
    "RequestTimeoutError",
    "ResourceKind",
    "Result",
    "RetryPolicy",
    "Runnable",
    "ServerError",
    "SharedCache",
    "ShutDownError",
    "Store",
    "StreamResponse",
    "TerminalError",
    "TooManyRequestsError",
    "Transport",
    "TransportRequest",
    "UnauthorizedError",
    "Watch",
    "WatchEvent",
    "WorkQueue",
    "and_",
    "annotations_changed",
    "condition_of",
    "conditions_of",
    "configure_logging",
    "controller_owner",
    "default_rate_limiter",
    "error_from_response",
    "generation_changed",
    "get_logger",
    "json_response",
    "keep_fields",
    "kind_of",
    "label_index",
    "labels_changed",
    "meta",
    "not_",
    "not_just_a_heartbeat",
    "object_key",
    "or_",
    "parse_selector",
    "predicate",
    "resource_version_changed",
    "soonest",
    "spec_of",
    "status_of",
    "strip_managed_fields",
]
