"""The one Workspace validator, used by the admission webhook and by the reconciler.

Pure: no I/O, no DNS, no clock. Give it a Workspace (model or dict) and, on
update, the old one; it returns every problem it finds as a
:class:`~kaito_core.api.errors.FieldError` naming the field and saying what to do::

    errors = validate_workspace(obj)                 # [] when valid
    ws = check_workspace(obj, old=old_obj)           # parsed Workspace, or raises WorkspaceValidationError

Anything at all may be passed in (a dict from YAML, garbage); the only exception
:func:`check_workspace` raises is :class:`~kaito_core.api.errors.WorkspaceValidationError`,
and :func:`validate_workspace` raises nothing.

URL checks look at the URL only: the scheme must be http(s), and hosts given as IP
literals must be public by :func:`kaito_presets.egress.address_problem` (the check the
downloader makes too: not loopback, private, link-local, cloud platform addresses, nor
any of those inside an IPv6 form), and well-known local or metadata host names
(localhost, metadata.google.internal, *.svc, *.internal, ...) are refused. Names are not resolved: a public name that
resolves to a private address passes here; the download runs in the tuning pod,
where network policy is the control for that.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kaito_presets import (
    RUNTIME_TRANSFORMERS,
    RUNTIME_VLLM,
    RUNTIMES,
    Catalog,
    GpuSku,
    ModelPreset,
    default_catalog,
    format_quantity,
)
from kaito_presets.egress import address_problem, redact_url
from kaito_presets.sizing import nodes_needed
from pydantic import ValidationError

from kaito_core.api.common import LabelSelector
from kaito_core.api.constants import (
    ANNOTATION_API_KEY_SECRET,
    ANNOTATION_BYPASS_RESOURCE_CHECKS,
    ANNOTATION_NODE_IMAGE_FAMILY,
    ANNOTATION_RUNTIME,
    GROUP,
    LABEL_MACHINE,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MAX_ADAPTERS,
    MAX_NODE_COUNT,
    WORKSPACE_KIND,
    WORKSPACE_VERSIONS,
)
from kaito_core.api.errors import FieldError, Messages, Rule, WorkspaceValidationError
from kaito_core.api.weights import ANNOTATION_MODEL_WEIGHTS, parse_weights_source
from kaito_core.api.workspace import (
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    PresetSpec,
    TuningSpec,
    Workspace,
)

__all__ = [
    "NODE_IMAGE_FAMILIES",
    "RESERVED_SELECTOR_LABELS",
    "SAFE_VOLUME_KINDS",
    "check_workspace",
    "parse_workspace",
    "resolve_runtime",
    "url_problem",
    "validate_workspace",
]

# Every pattern is used with fullmatch: "$" would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DECIMAL = re.compile(r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*")
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}")
#: Labels kaito puts on the nodes it makes to say whose they are. A selector made only of these would pick
#: the nodes of another Workspace (Kaito refuses it too: "at least one non-reserved label").
RESERVED_SELECTOR_LABELS = (LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, LABEL_MACHINE)
#: Values of kaito.sh/node-image-family a provisioner knows (Kaito's list; compared ignoring case and spaces).
NODE_IMAGE_FAMILIES = ("ubuntu", "azurelinux")

#: Volume kinds a Workspace's pods may use: the Pod Security "restricted" profile's list, nothing of the
#: node (hostPath) and no network storage mounted by the node on the pod's behalf (nfs, iscsi, ...).
SAFE_VOLUME_KINDS = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "ephemeral", "csi",
                     "projected", "downwardAPI")
#: Every other VolumeSource kind Kubernetes knows (refused by name; anything else is not a volume kind).
_OTHER_VOLUME_KINDS = frozenset({
    "hostPath", "nfs", "iscsi", "rbd", "cephfs", "glusterfs", "fc", "flexVolume", "flocker", "gitRepo",
    "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "azureFile", "cinder", "vsphereVolume",
    "quobyte", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos", "image",
})
_HOST_NAMESPACES = {
    "hostNetwork": "the node's network namespace (every interface and port of the node)",
    "hostPID": "the node's process namespace (every process of the node)",
    "hostIPC": "the node's IPC namespace",
}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
#: The one capability a container may add (as the "restricted" profile allows): binding ports below 1024.
_SAFE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
_SAFE_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
_SAFE_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
#: Namespaced sysctls the kubelet allows every pod (the "baseline" profile's list).
_SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_POD_ONLY = "a Workspace may run only what any pod in its namespace may run"
_SCHEMA_BOUNDS = {
    "string_too_long": "must be at most {max_length} characters long; shorten it",
    "too_long": "must have at most {max_length} items; remove some",
}

_BLOCKED_HOSTS = frozenset({
    "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal",
    "kubernetes", "kubernetes.default",
})
_BLOCKED_SUFFIXES = (".localhost", ".localdomain", ".local", ".internal", ".svc", ".cluster.local")


# --- parsing ----------------------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _schema_message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "required field is missing; set it"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object (a mapping of fields)"
    if kind in _SCHEMA_BOUNDS:
        return _SCHEMA_BOUNDS[kind].format(max_length=(error.get("ctx") or {}).get("max_length", "?"))
    message = str(error.get("msg", "is invalid"))
    return message.replace("Input should be", "must be", 1)


def parse_workspace(obj: Any) -> tuple[Workspace | None, list[FieldError]]:
    """Parse a Workspace from anything; (model, []) or (None, schema errors)."""
    if isinstance(obj, Workspace):
        return obj, []
    if not isinstance(obj, Mapping):
        return None, [FieldError("", f"a Workspace must be an object (a mapping), not {type(obj).__name__}")]
    try:
        return Workspace.model_validate(dict(obj), strict=True), []
    except ValidationError as exc:
        errors = [FieldError(_path(tuple(e["loc"])), _schema_message(e), Rule.SCHEMA) for e in exc.errors()]
        return None, errors


# --- URLs -------------------------------------------------------------------------------------


def _label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key the apiserver takes (``[prefix/]name``); None when it is one."""
    prefix, slash, name = key.rpartition("/")
    fine_prefix = not slash or (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix) is not None)
    if fine_prefix and 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name):
        return None
    return (f"{key!r} is not a valid label key: write an optional prefix (a lowercase DNS subdomain such as "
            "example.com) and '/', then a name of at most 63 characters, letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # address_problem looks inside ::ffff:10.0.0.1
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):  # 127.1, 2130706433, 0x7f.0.0.1: what curl and friends accept
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def url_problem(url: str) -> tuple[str, str] | None:
    """Why ``url`` may not be downloaded from, as (rule, message); None when it is fine.

    The message shows the URL without its query string (:func:`kaito_presets.egress.redact_url`): it
    reaches the Workspace's status, Events and the webhook's log, and a pre-signed URL's credentials
    live there.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return Rule.INVALID_URL, f"{shown!r} is not a valid URL; give a public http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https"):
        return Rule.INVALID_URL, f"{shown!r} is not an http(s) URL; give a public http:// or https:// URL"
    if not host:
        return Rule.INVALID_URL, f"{shown!r} has no host; give a public http:// or https:// URL"
    ip = _ip_literal(host)
    if ip is not None:
        problem = address_problem(ip)
        if problem:
            return Rule.FORBIDDEN_URL, (f"{shown!r} points at {problem}; give a public URL "
                                        "(data inside the cluster can come from an image or a volumeSource)")
        return None
    if host in _BLOCKED_HOSTS or host.endswith(_BLOCKED_SUFFIXES):
        return Rule.FORBIDDEN_URL, (f"{shown!r} points at {host!r}, a local, in-cluster or cloud metadata host; "
                                    "give a public URL (in-cluster data can come from an image or a volumeSource)")
    return None


# --- the validator ----------------------------------------------------------------------------


class _Validator:
    def __init__(self, ws: Workspace, catalog: Catalog, *, default_runtime: str | None = None):
        self.ws = ws
        self.catalog = catalog
        self.default_runtime = default_runtime
        self.errors: list[FieldError] = []
        annotations = ws.metadata.annotations or {}
        self.bypass = annotations.get(ANNOTATION_BYPASS_RESOURCE_CHECKS, "").lower() == "true"
        self.sku: GpuSku | None = None

    def error(self, path: str, message: str, rule: str) -> None:
        self.errors.append(FieldError(path, message, rule))

    def run(self) -> list[FieldError]:
        ws = self.ws
        self.check_identity()
        if ws.inference is not None and ws.tuning is not None:
            self.error("tuning", Messages.INFERENCE_AND_TUNING, Rule.INFERENCE_AND_TUNING)
        elif ws.inference is None and ws.tuning is None:
            self.error("", Messages.NEITHER_INFERENCE_NOR_TUNING, Rule.NEITHER_INFERENCE_NOR_TUNING)
        self.check_resource()
        if ws.inference is not None:
            self.check_inference(ws.inference)
        if ws.tuning is not None:
            self.check_tuning(ws.tuning)
        self.check_weights()
        self.check_node_image_family()
        self.check_api_key_secret()
        return self.errors

    def check_api_key_secret(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_API_KEY_SECRET)
        if value is None or value.strip().lower() == "none":
            return
        if not (0 < len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value)):
            self.error(f"metadata.annotations[{ANNOTATION_API_KEY_SECRET}]",
                       f"{value!r} is not a Secret name; name a Secret in this namespace whose key \"api-key\" "
                       "holds the bearer token (kubectl create secret generic NAME --from-literal=api-key=TOKEN), "
                       "or \"none\" to serve without authentication", Rule.INVALID_API_KEY_SECRET)

    def check_node_image_family(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_NODE_IMAGE_FAMILY)
        if value is not None and value.strip().lower() not in NODE_IMAGE_FAMILIES:
            self.error(f"metadata.annotations[{ANNOTATION_NODE_IMAGE_FAMILY}]",
                       f"unsupported node image family {value!r}; use one of {', '.join(NODE_IMAGE_FAMILIES)} "
                       "(the node images the provisioners can make GPU nodes from), or remove the annotation",
                       Rule.UNKNOWN_NODE_IMAGE_FAMILY)

    def check_weights(self) -> None:
        value = (self.ws.metadata.annotations or {}).get(ANNOTATION_MODEL_WEIGHTS)
        if value is None:
            return
        path = f"metadata.annotations[{ANNOTATION_MODEL_WEIGHTS}]"
        spec = self.ws.inference.preset if self.ws.inference is not None else (
            self.ws.tuning.preset if self.ws.tuning is not None else None)
        if spec is None:
            self.error(path, "names where a preset's weights come from, and this Workspace has no preset; "
                       "remove the annotation (a pod template brings its own model)", Rule.INVALID_WEIGHTS_SOURCE)
            return
        try:
            parse_weights_source(value)
        except ValueError as exc:
            self.error(path, str(exc), Rule.INVALID_WEIGHTS_SOURCE)

    # identity
    def check_identity(self) -> None:
        ws = self.ws
        versions = {f"{GROUP}/{v}" for v in WORKSPACE_VERSIONS}
        if ws.api_version not in versions:
            self.error("apiVersion", f"{ws.api_version!r} is not a Workspace version; use one of "
                       f"{', '.join(sorted(versions))}", Rule.WRONG_KIND)
        if ws.kind != WORKSPACE_KIND:
            self.error("kind", f"{ws.kind!r} is not {WORKSPACE_KIND}", Rule.WRONG_KIND)
        name = ws.metadata.name
        if name is not None and (len(name) > 63 or not _DNS_1035.fullmatch(name)):
            self.error("metadata.name", f"{name!r} is not a valid Workspace name: use at most 63 lowercase "
                       "letters, digits and '-', starting with a letter (the inference Service is named "
                       "after the Workspace)", Rule.INVALID_NAME)

    # resource
    def check_resource(self) -> None:
        resource = self.ws.resource
        if resource.count > MAX_NODE_COUNT:
            self.error("resource.count", f"{resource.count} nodes asked for; at most {MAX_NODE_COUNT} are allowed "
                       "per Workspace; lower count, or spread the work over several Workspaces",
                       Rule.TOO_MANY_NODES)
        self.check_label_selector(resource.label_selector, "resource.labelSelector")
        if resource.instance_type is not None:
            if self.bypass:
                return
            self.sku = self.catalog.find_sku(resource.instance_type)
            if self.sku is None:
                close = self.catalog.close_sku_names(resource.instance_type)
                hint = (f"did you mean {', '.join(close)}?" if close else "use a GPU instance type from the "
                        "catalog, e.g. Standard_NC24ads_A100_v4 or g5.xlarge (`kaito presets` shows what fits)")
                self.error("resource.instanceType",
                           f"unknown GPU instance type {resource.instance_type!r}; {hint} (for nodes the "
                           f"catalog does not know, set the annotation {ANNOTATION_BYPASS_RESOURCE_CHECKS}: "
                           "\"true\")", Rule.UNKNOWN_INSTANCE_TYPE)
        elif not resource.preferred_nodes and not self.user_selector(resource.label_selector):
            # Bring-your-own by labels (Kaito's BYO): the selector picks the nodes and their GPU feature
            # discovery labels say what they have; an empty selector would pick every node of the cluster.
            self.error("resource.instanceType",
                       "required unless resource.labelSelector picks your own GPU nodes (they need the NVIDIA "
                       "GPU feature discovery labels nvidia.com/gpu.product, nvidia.com/gpu.count, "
                       "nvidia.com/gpu.memory) or resource.preferredNodes lists them; set the instance type to "
                       "provision, e.g. Standard_NC24ads_A100_v4 or g5.xlarge", Rule.INSTANCE_TYPE_REQUIRED)
        match_labels = resource.label_selector.match_labels or {}
        if match_labels and all(key in RESERVED_SELECTOR_LABELS for key in match_labels):
            self.error("resource.labelSelector.matchLabels",
                       f"must contain at least one label not reserved by kaito ({', '.join(RESERVED_SELECTOR_LABELS)}"
                       " say which Workspace or Machine a node was made for; a selector of only those picks "
                       "another Workspace's nodes); add a label of your own, e.g. apps: my-model",
                       Rule.INVALID_LABEL_SELECTOR)

    @staticmethod
    def user_selector(selector: LabelSelector) -> bool:
        """The selector has a term of the user's own (not only kaito's reserved labels)."""
        keys = [*(selector.match_labels or {}), *(r.key for r in selector.match_expressions or ())]
        return any(key not in RESERVED_SELECTOR_LABELS for key in keys)

    def check_label_selector(self, selector: LabelSelector, path: str) -> None:
        """Keys and values as the apiserver checks them (they become the labels of the Machines' nodes)."""
        for key, value in (selector.match_labels or {}).items():
            problem = _label_key_problem(key)
            if problem is not None:
                self.error(f"{path}.matchLabels", problem, Rule.INVALID_LABEL_SELECTOR)
            else:
                self.check_label_value(value, f"{path}.matchLabels[{key}]")
        for index, requirement in enumerate(selector.match_expressions or ()):
            where = f"{path}.matchExpressions[{index}]"
            problem = _label_key_problem(requirement.key)
            if problem is not None:
                self.error(f"{where}.key", problem, Rule.INVALID_LABEL_SELECTOR)
            operator, values = requirement.operator, requirement.values or []
            if operator in ("In", "NotIn") and not values:
                self.error(f"{where}.values", f"required with operator {operator}: list the values to match",
                           Rule.INVALID_LABEL_SELECTOR)
            elif operator in ("Exists", "DoesNotExist") and values:
                self.error(f"{where}.values", f"must be empty with operator {operator}; remove values",
                           Rule.INVALID_LABEL_SELECTOR)
            for number, value in enumerate(values):
                self.check_label_value(value, f"{where}.values[{number}]")

    def check_label_value(self, value: str, path: str) -> None:
        if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
            self.error(path, f"{value!r} is not a valid label value: use at most 63 characters, letters, digits, "
                       "'-', '_' or '.', beginning and ending with a letter or digit (or leave it empty)",
                       Rule.INVALID_LABEL_SELECTOR)

    # pods and volumes: never more than a pod of the namespace may do
    def check_pod_template(self, template: Mapping[str, Any], path: str) -> None:
        metadata = template.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("annotations"), Mapping):
            for key, value in metadata["annotations"].items():
                if str(key).startswith(_APPARMOR_ANNOTATION) and str(value) == "unconfined":
                    self.error(f"{path}.metadata.annotations[{key}]", "an unconfined AppArmor profile is not "
                               f"allowed ({_POD_ONLY}); remove the annotation", Rule.POD_SECURITY)
        spec = template.get("spec")
        if spec is None:
            return
        path = f"{path}.spec"
        if not isinstance(spec, Mapping):
            self.error(path, "must be an object (a PodSpec)", Rule.SCHEMA)
            return
        for field, what in _HOST_NAMESPACES.items():
            if spec.get(field) not in (None, False):
                self.error(f"{path}.{field}", f"a pod in {what} is not allowed ({_POD_ONLY}); remove {field}",
                           Rule.POD_SECURITY)
        for field in ("serviceAccountName", "serviceAccount"):
            account = spec.get(field)
            if account not in (None, "", "default"):
                self.error(f"{path}.{field}", f"{account!r}: a Workspace's pods run as the namespace's default "
                           f"ServiceAccount; remove {field} (give what the server needs to default, or mount a "
                           "Secret)", Rule.SERVICE_ACCOUNT)
        self.check_security_context(spec.get("securityContext"), f"{path}.securityContext", pod=True)
        for field in _CONTAINER_LISTS:
            containers = spec.get(field)
            if containers is None:
                continue
            if not isinstance(containers, list):
                self.error(f"{path}.{field}", "must be a list of containers", Rule.SCHEMA)
                continue
            for index, item in enumerate(containers):
                self.check_container(item, f"{path}.{field}[{index}]")
        volumes = spec.get("volumes")
        if volumes is not None and not isinstance(volumes, list):
            self.error(f"{path}.volumes", "must be a list of volumes", Rule.SCHEMA)
        elif volumes:
            for index, volume in enumerate(volumes):
                self.check_volume_source(volume, f"{path}.volumes[{index}]", named=True)

    def check_container(self, item: Any, path: str) -> None:
        if not isinstance(item, Mapping):
            self.error(path, "must be an object (a container)", Rule.SCHEMA)
            return
        self.check_security_context(item.get("securityContext"), f"{path}.securityContext", pod=False)
        ports = item.get("ports")
        for index, port in enumerate(ports if isinstance(ports, list) else ()):
            if isinstance(port, Mapping) and port.get("hostPort") not in (None, 0):
                self.error(f"{path}.ports[{index}].hostPort", f"a port of the node is not allowed ({_POD_ONLY}); "
                           "remove hostPort (the Workspace's Service reaches containerPort)", Rule.POD_SECURITY)

    def check_security_context(self, context: Any, path: str, *, pod: bool) -> None:
        if context is None:
            return
        if not isinstance(context, Mapping):
            self.error(path, "must be an object (a SecurityContext)", Rule.SCHEMA)
            return
        refuse = self.error
        if not pod:
            if context.get("privileged") not in (None, False):
                refuse(f"{path}.privileged", f"privileged containers are not allowed ({_POD_ONLY}); remove "
                       "privileged or set it to false", Rule.POD_SECURITY)
            if context.get("allowPrivilegeEscalation") not in (None, False):
                refuse(f"{path}.allowPrivilegeEscalation", "privilege escalation (setuid binaries, file "
                       f"capabilities) is not allowed ({_POD_ONLY}); set it to false or remove it", Rule.POD_SECURITY)
            capabilities = context.get("capabilities")
            added = capabilities.get("add") if isinstance(capabilities, Mapping) else None
            if added is not None:
                names = [str(a) for a in added] if isinstance(added, list) else [str(added)]
                extra = [n for n in names if n.upper().removeprefix("CAP_") not in _SAFE_CAPABILITIES]
                if extra:
                    refuse(f"{path}.capabilities.add", f"adds {', '.join(extra)}; added capabilities are not "
                           f"allowed ({_POD_ONLY}); remove them (only NET_BIND_SERVICE may be added)",
                           Rule.POD_SECURITY)
            if context.get("procMount") not in (None, "Default"):
                refuse(f"{path}.procMount", f"an unmasked /proc is not allowed ({_POD_ONLY}); remove it",
                       Rule.POD_SECURITY)
        else:
            sysctls = context.get("sysctls")
            for index, sysctl in enumerate(sysctls if isinstance(sysctls, list) else ()):
                name = sysctl.get("name") if isinstance(sysctl, Mapping) else sysctl
                if name not in _SAFE_SYSCTLS:
                    refuse(f"{path}.sysctls[{index}]", f"sysctl {name!r} is not one every pod may set "
                           f"({_POD_ONLY}); remove it", Rule.POD_SECURITY)
        windows = context.get("windowsOptions")
        if isinstance(windows, Mapping) and windows.get("hostProcess") not in (None, False):
            refuse(f"{path}.windowsOptions.hostProcess", f"a Windows host process is not allowed ({_POD_ONLY}); "
                   "remove it", Rule.POD_SECURITY)
        for field in ("seccompProfile", "appArmorProfile"):
            profile = context.get(field)
            kind = profile.get("type") if isinstance(profile, Mapping) else None
            if kind is not None and (kind == "Unconfined" or (field == "seccompProfile" and kind not in _SAFE_SECCOMP)):
                refuse(f"{path}.{field}.type", f"{kind!r} is not allowed ({_POD_ONLY}); use RuntimeDefault "
                       "(or a Localhost profile)", Rule.POD_SECURITY)
        selinux = context.get("seLinuxOptions")
        if isinstance(selinux, Mapping):
            if selinux.get("type") not in (None, *_SAFE_SELINUX_TYPES):
                refuse(f"{path}.seLinuxOptions.type", f"SELinux type {selinux.get('type')!r} is not allowed "
                       f"({_POD_ONLY}); use container_t or remove it", Rule.POD_SECURITY)
            for field in ("user", "role"):
                if selinux.get(field) not in (None, ""):
                    refuse(f"{path}.seLinuxOptions.{field}", f"setting the SELinux {field} is not allowed "
                           f"({_POD_ONLY}); remove it", Rule.POD_SECURITY)

    def check_volume_source(self, source: Any, path: str, *, named: bool) -> None:
        """One volume (``named``: a pod's ``volumes[i]``) or a bare VolumeSource: an allowed kind, exactly one."""
        if not isinstance(source, Mapping):
            self.error(path, "must be an object (a volume)", Rule.SCHEMA)
            return
        kinds = [str(k) for k in source if not (named and k == "name")]
        safe = ", ".join(SAFE_VOLUME_KINDS)
        refused = [k for k in kinds if k not in SAFE_VOLUME_KINDS]
        for kind in refused:
            if kind in _OTHER_VOLUME_KINDS:
                why = (" (a hostPath mounts the node's own files)" if kind == "hostPath"
                       else " (the node would mount it for the pod)")
                message = f"{kind} volumes are not allowed; use one of {safe}{why}"
            else:
                message = f"{kind!r} is not a volume kind; use one of {safe}"
            self.error(f"{path}.{kind}", message, Rule.FORBIDDEN_VOLUME)
        if not refused and len(kinds) != 1:
            got = f"got {' and '.join(kinds)}" if kinds else "none is set"
            self.error(path, f"give exactly one volume kind; {got} (one of {safe})", Rule.FORBIDDEN_VOLUME)

    def preset(self, spec: PresetSpec, path: str) -> ModelPreset | None:
        found = self.catalog.find_model(spec.name)
        if found is None:
            close = self.catalog.close_model_names(spec.name)
            # A Hugging Face id the hub could not size: say why (unreachable, gated, no config).
            why = self.catalog.unresolved_reason(spec.name)
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"{why}" if why else "`kaito presets` lists them, or give a Hugging Face id (org/model)")
            self.error(f"{path}.name", f"unknown preset {spec.name!r}; {hint}", Rule.UNKNOWN_PRESET)
            return None
        options = spec.preset_options
        if spec.access_mode == "private" and not (options and options.image):
            self.error(f"{path}.presetOptions.image",
                       "required when accessMode is private; give the image that holds the model weights "
                       "(and imagePullSecrets to pull it)", Rule.PRIVATE_IMAGE_REQUIRED)
        if found.gated and spec.access_mode == "public" and not (options and options.model_access_secret):
            self.error(f"{path}.presetOptions.modelAccessSecret",
                       f"{found.name} is gated on Hugging Face ({found.huggingface_id}); accept its licence on "
                       "the model page, store your Hugging Face token in a Secret in this namespace "
                       "(key HF_TOKEN) and name that Secret here", Rule.GATED_PRESET)
        return found

    def check_fit(self, preset: ModelPreset, need_memory: int, need_gpus: int, what: str,
                  alternative: str | None = None) -> None:
        """The instance type has enough GPU memory and GPUs for ``preset`` (one error at most)."""
        sku = self.sku
        if sku is None or self.bypass:
            return
        nodes = self.ws.resource.count if (preset.distributed_inference and what == "inference") else 1
        have_memory, have_gpus = sku.gpu_memory * nodes, sku.gpu_count * nodes
        if have_memory >= need_memory and have_gpus >= need_gpus:
            return
        fits = self.catalog.suggest_skus(need_memory, need_gpus, cloud=sku.cloud)
        tries = [alternative] if alternative else []
        if preset.distributed_inference and what == "inference":
            # A preset that splits across nodes fits on enough of them: say how many.
            tries.append(f"resource.count: {nodes_needed(sku, need_memory, need_gpus)}")
        tries += [fits[0].name] if fits else []
        try_text = f"; try {' or '.join(tries)}" if tries else "; no single instance type in the catalog is big enough"
        subject = sku.name if nodes == 1 else f"{nodes} x {sku.name}"
        verb = "has" if nodes == 1 else "have"
        purpose = "" if what == "inference" else f" for {what}"
        if have_memory < need_memory:
            self.error("resource.instanceType",
                       f"{subject} {verb} {format_quantity(have_memory)} GPU memory; {preset.name} needs "
                       f"{format_quantity(need_memory)}{purpose}{try_text}", Rule.INSUFFICIENT_GPU_MEMORY)
        else:
            plural = "GPU" if have_gpus == 1 else "GPUs"
            self.error("resource.instanceType",
                       f"{subject} {verb} {have_gpus} {plural}; {preset.name} needs {need_gpus}{purpose}{try_text}",
                       Rule.INSUFFICIENT_GPU_COUNT)

    def check_runtime(self, preset: ModelPreset | None) -> None:
        runtime = (self.ws.metadata.annotations or {}).get(ANNOTATION_RUNTIME)
        if runtime is None:
            return
        allowed = preset.runtimes if preset is not None else RUNTIMES
        if runtime not in allowed:
            subject = f"{preset.name} runs with" if preset is not None else "use"
            self.error(f"metadata.annotations[{ANNOTATION_RUNTIME}]",
                       f"unknown runtime {runtime!r}; {subject} {' or '.join(allowed)}", Rule.UNKNOWN_RUNTIME)

    # inference
    def check_inference(self, inference: InferenceSpec) -> None:
        if inference.preset is not None and inference.template is not None:
            self.error("inference.template", Messages.PRESET_AND_TEMPLATE, Rule.PRESET_AND_TEMPLATE)
        elif inference.preset is None and inference.template is None:
            self.error("inference", Messages.NEITHER_PRESET_NOR_TEMPLATE, Rule.NEITHER_PRESET_NOR_TEMPLATE)
        preset = None
        if inference.preset is not None:
            preset = self.preset(inference.preset, "inference.preset")
            if preset is not None:
                self.check_fit(preset, preset.inference.gpu_memory, preset.inference.gpu_count, "inference")
        self.check_runtime(preset)
        if preset is not None and inference.adapters:
            self.check_adapter_runtime(preset, inference.adapters)
        if inference.template is not None:
            self.check_pod_template(inference.template, "inference.template")
        if inference.adapters:
            self.check_adapters(inference.adapters, has_preset=inference.preset is not None)

    def check_adapter_runtime(self, preset: ModelPreset, adapters: list[AdapterSpec]) -> None:
        """vLLM serves each adapter as a model of its own at full strength and cannot scale one: refuse a
        strength other than 1 there, as Kaito does, rather than ignore it (docs/runtimes.md)."""
        runtime = resolve_runtime(self.ws.runtime, self.default_runtime, preset)
        if runtime != RUNTIME_VLLM:
            return
        for index, adapter in enumerate(adapters):
            strength = adapter.strength
            if strength is None or not _DECIMAL.fullmatch(strength) or not 0.0 <= float(strength) < 1.0:
                continue  # unset, full strength, or not a strength at all (check_strength says so)
            self.error(f"inference.adapters[{index}].strength",
                       f"strength {strength!r} cannot be applied under vLLM ({preset.name}'s runtime "
                       "here): it serves each adapter as its own model at full strength; remove strength "
                       f"(or set \"1.0\"), or run the transformers runtime (annotation {ANNOTATION_RUNTIME}: "
                       "transformers) to blend adapters by strength", Rule.ADAPTER_STRENGTH)

    def check_adapters(self, adapters: list[AdapterSpec], *, has_preset: bool) -> None:
        if not has_preset:
            self.error("inference.adapters", "adapters need inference.preset: they are loaded on top of a "
                       "preset model; remove them or use a preset", Rule.ADAPTERS_NEED_PRESET)
        if len(adapters) > MAX_ADAPTERS:
            self.error("inference.adapters", f"{len(adapters)} adapters given; at most {MAX_ADAPTERS} are "
                       "allowed, remove some", Rule.TOO_MANY_ADAPTERS)
        seen: dict[str, int] = {}
        for index, adapter in enumerate(adapters):
            path = f"inference.adapters[{index}]"
            source = adapter.source
            if source is None:
                self.error(f"{path}.source", "required: give the adapter's name and image (or volumeSource)",
                           Rule.ADAPTER_SOURCE)
            else:
                self.check_adapter_source(source, path, index, seen)
            if adapter.strength is not None:
                self.check_strength(adapter.strength, f"{path}.strength")

    def check_adapter_source(self, source: DataSource, path: str, index: int, seen: dict[str, int]) -> None:
        name = source.name
        if not name:
            self.error(f"{path}.source.name", "required: name the adapter (a DNS label such as my-adapter)",
                       Rule.ADAPTER_SOURCE)
        elif len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            self.error(f"{path}.source.name", f"{name!r} is not a valid adapter name: use at most 63 lowercase "
                       "letters, digits and '-' (it names a container)", Rule.ADAPTER_SOURCE)
        elif name in seen:
            self.error(f"{path}.source.name", f"duplicate adapter name {name!r} (also used by "
                       f"inference.adapters[{seen[name]}]); give each adapter a unique name",
                       Rule.DUPLICATE_ADAPTER)
        else:
            seen[name] = index
        if source.urls:
            self.error(f"{path}.source.urls", "URLs are not supported as an adapter source; give image or "
                       "volumeSource", Rule.ADAPTER_SOURCE)
        if source.image and source.volume_source:
            self.error(f"{path}.source", "set either image or volumeSource, not both", Rule.ADAPTER_SOURCE)
        elif not source.image and not source.volume_source:
            self.error(f"{path}.source.image", "required: give the image that holds the adapter, or a "
                       "volumeSource (e.g. persistentVolumeClaim) with the adapter's files at its root",
                       Rule.ADAPTER_SOURCE)
        if source.volume_source:
            self.check_volume_source(source.volume_source, f"{path}.source.volumeSource", named=False)

    def check_strength(self, strength: str, path: str) -> None:
        value = float(strength) if _DECIMAL.fullmatch(strength) else math.nan
        if math.isnan(value):
            self.error(path, f"{strength!r} is not a number; write a number from 0 to 1 as a string, "
                       'e.g. "0.5"', Rule.ADAPTER_STRENGTH)
        elif not 0.0 <= value <= 1.0:
            self.error(path, f"{strength!r} is outside [0, 1]; use a number from 0 to 1, e.g. \"0.5\"",
                       Rule.ADAPTER_STRENGTH)

    # tuning
    def check_tuning(self, tuning: TuningSpec) -> None:
        if tuning.preset is None:
            self.error("tuning.preset", "required: name the preset model to tune (`kaito presets` lists "
                       "those that support tuning)", Rule.TUNING_PRESET_REQUIRED)
        else:
            preset = self.preset(tuning.preset, "tuning.preset")
            if preset is not None:
                self.check_tuning_preset(preset, tuning.method)
        self.check_input(tuning.input)
        self.check_output(tuning.output)
        if self.ws.resource.count > 1:
            self.error("resource.count", f"{self.ws.resource.count} nodes asked for; tuning runs on one node "
                       "(as in Kaito: multi-node tuning is not supported); set count to 1", Rule.TUNING_MULTI_NODE)

    def check_tuning_preset(self, preset: ModelPreset, method: str) -> None:
        if preset.tuning is None:
            able = [m.name for m in self.catalog.models if m.supports_tuning]
            self.error("tuning.preset.name", f"{preset.name} does not support tuning ({method}); presets that do: "
                       f"{', '.join(able)}", Rule.TUNING_NOT_SUPPORTED)
            return
        need = preset.tuning_gpu_memory(method)
        if need is None:
            self.error("tuning.method", f"{preset.name} does not support {method} tuning; use "
                       f"{' or '.join(preset.tuning_methods)}", Rule.TUNING_METHOD_NOT_SUPPORTED)
            return
        alternative = None
        sku = self.sku
        for other in preset.tuning_methods:
            other_need = preset.tuning_gpu_memory(other)
            if (other != method and other_need is not None and sku is not None
                    and other_need <= sku.gpu_memory and preset.tuning.gpu_count <= sku.gpu_count):
                alternative = f"method {other} (needs {format_quantity(other_need)})"
        self.check_fit(preset, need, preset.tuning.gpu_count, f"{method} tuning", alternative)

    def check_input(self, source: DataSource | None) -> None:
        if source is None:
            self.error("tuning.input", "required: give the training data as urls, image or volumeSource",
                       Rule.TUNING_INPUT)
            return
        given = [name for name, value in (("urls", source.urls), ("image", source.image),
                                          ("volumeSource", source.volume_source)) if value]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "none is set"
            self.error("tuning.input", f"set exactly one of urls, image or volumeSource; {got}", Rule.TUNING_INPUT)
        for index, url in enumerate(source.urls or ()):
            problem = url_problem(url)
            if problem is not None:
                self.error(f"tuning.input.urls[{index}]", problem[1], problem[0])
        if source.volume_source:
            self.check_volume_source(source.volume_source, "tuning.input.volumeSource", named=False)

    def check_output(self, dest: DataDestination | None) -> None:
        if dest is None:
            self.error("tuning.output", "required: give where the adapter goes, an image (with "
                       "imagePushSecret) or a volumeSource", Rule.TUNING_OUTPUT)
            return
        if dest.image and dest.volume_source:
            self.error("tuning.output", "set either image or volumeSource, not both", Rule.TUNING_OUTPUT)
        elif not dest.image and not dest.volume_source:
            self.error("tuning.output", "set image (with imagePushSecret) or volumeSource", Rule.TUNING_OUTPUT)
        if dest.volume_source:
            self.check_volume_source(dest.volume_source, "tuning.output.volumeSource", named=False)
        if dest.image and not dest.image_push_secret:
            self.error("tuning.output.imagePushSecret",
                       f"required with tuning.output.image; name a Secret in this namespace "
                       f"(type kubernetes.io/dockerconfigjson) that can push to {dest.image.split('/')[0]}",
                       Rule.OUTPUT_PUSH_SECRET)


def _immutability(new: Workspace, old: Workspace) -> list[FieldError]:
    errors: list[FieldError] = []

    def changed(path: str, before: Any, after: Any) -> None:
        if before != after:
            errors.append(FieldError(path, Messages.IMMUTABLE, Rule.IMMUTABLE))

    if (new.inference is None) != (old.inference is None):
        errors.append(FieldError("", Messages.SWITCH_INFERENCE_TUNING, Rule.SWITCH_INFERENCE_TUNING))
    changed("resource.instanceType", old.resource.instance_type, new.resource.instance_type)
    changed("resource.labelSelector", old.resource.label_selector.to_dict(), new.resource.label_selector.to_dict())
    if new.inference and old.inference and new.inference.preset and old.inference.preset:
        changed("inference.preset.name", old.inference.preset.name, new.inference.preset.name)
    if new.tuning and old.tuning:
        changed("tuning.method", old.tuning.method, new.tuning.method)
        if new.tuning.preset and old.tuning.preset:
            changed("tuning.preset.name", old.tuning.preset.name, new.tuning.preset.name)
    return errors


def resolve_runtime(wanted: str | None, default: str | None, preset: ModelPreset | None) -> str:
    """The runtime a Workspace's pods run: the ``kaito.sh/runtime`` annotation, else the operator's
    ``default_runtime``, when the preset offers it; else the preset's own default (transformers
    for a pod template, which has no preset). The one rule: the reconciler builds pods with it and
    the validator judges runtime-specific fields (adapter strength) with it."""
    wanted = wanted or default
    if preset is None:
        return wanted or RUNTIME_TRANSFORMERS
    if wanted and wanted in preset.runtimes:
        return wanted
    return preset.default_runtime


def validate_workspace(obj: Any, old: Any = None, *, catalog: Catalog | None = None,
                       default_runtime: str | None = None) -> list[FieldError]:
    """Every problem with ``obj`` (a Workspace or a dict); [] when it is valid.

    ``old`` is the Workspace before an update (webhook: ``oldObject``), for the
    immutable fields. ``catalog`` defaults to the packaged one. Never raises.
    """
    ws, errors = parse_workspace(obj)
    if ws is None:
        return errors
    errors = _Validator(ws, catalog or default_catalog(), default_runtime=default_runtime).run()
    if old is not None:
        old_ws, _ = parse_workspace(old)
        if old_ws is not None:
            errors += _immutability(ws, old_ws)
    return errors


def check_workspace(obj: Any, old: Any = None, *, catalog: Catalog | None = None,
                    default_runtime: str | None = None) -> Workspace:
    """The parsed Workspace when valid; raises :class:`WorkspaceValidationError` listing every problem."""
    errors = validate_workspace(obj, old, catalog=catalog, default_runtime=default_runtime)
    if errors:
        raise WorkspaceValidationError(errors)
    ws, _ = parse_workspace(obj)
    assert ws is not None  # no errors means it parsed
    return ws
