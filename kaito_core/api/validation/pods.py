"""Pod checks of the validator: a free-form pod template and every volume source.

Pods and volumes: never more than a pod of the namespace may do. The pod template of a
Workspace (``inference.template``) is checked as the Pod Security profiles check a pod; every
volume source (a template's volumes, an adapter's, tuning input and output) must be of a kind
any pod may mount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_core.api.errors import Rule
from kaito_core.api.validation.fields import _WorkspaceChecks

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


class _PodChecks(_WorkspaceChecks):
    """Pods and volumes: never more than a pod of the namespace may do."""

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
