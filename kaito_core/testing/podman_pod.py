"""Run a Kubernetes pod spec with podman, the way a kubelet would, for tests of what ends in a container.

kwok marks pods Running without running anything; this runs the operator's rendered pod for real:
every init container in order to completion, then the containers, with the spec's commands, env,
volumes (``emptyDir``, ``configMap``, ``secret``, ``persistentVolumeClaim`` as host folders),
``subPath`` and ``readOnly`` mounts, memory limits, the ``/dev/termination-log`` file and its
``FallbackToLogsOnError`` policy, ``$(VAR)`` expansion, and the readiness probe. What it does not
do: separate network namespaces (the pod's containers share the host's loopback, as a pod's share
its own), service-account tokens, device plugins (``nvidia.com/gpu`` limits are ignored: CPU only).

    pod = PodmanPod(podman, spec, workdir=tmp, images={"ghcr.io/kaito-core/kaito-runtime:0.1.0": local},
                    config_maps={"ws-inference-config": {"inference_config.yaml": "..."}})
    pod.run_init()          # raises InitContainerFailed with the termination message
    pod.start()
    pod.wait_ready()        # the readiness probe over HTTP
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito_core.testing.podman import ContainerHandle, Podman, PodmanError

__all__ = ["ContainerResult", "InitContainerFailed", "PodmanPod"]

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
#: The kubelet's limits for FallbackToLogsOnError: the last 80 lines, at most 2048 bytes.
_FALLBACK_LINES = 80
_FALLBACK_BYTES = 2048


@dataclass(frozen=True)
class ContainerResult:
    name: str
    exit_code: int
    message: str
    """The termination message as the kubelet would report it."""
    logs: str


class InitContainerFailed(AssertionError):
    """An init container exited non-zero; the pod would not start."""

    def __init__(self, result: ContainerResult):
        super().__init__(f"init container {result.name} exited {result.exit_code}: {result.message}\n"
                         f"--- logs ---\n{result.logs[-4000:]}")
        self.result = result


def _expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion in command and args (unknown names stay as written)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class PodmanPod:
    podman: Podman
    spec: Mapping[str, Any]
    workdir: Path
    images: Mapping[str, str] = field(default_factory=dict)
    """Image as the spec names it -> the local image to run instead (no registry serves ours)."""
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    """The pod's annotations (what a ``downwardAPI`` volume projects)."""
    claims: Mapping[str, Path] = field(default_factory=dict)
    """PersistentVolumeClaim name -> the host folder that backs it."""
    name: str = "pod"
    handles: dict[str, ContainerHandle] = field(default_factory=dict)
    _volumes: dict[str, Path] | None = None

    # ------------------------------------------------------------------ volumes

    def volumes(self) -> dict[str, Path]:
        """Each volume of the spec as a host folder, made once per pod (an emptyDir lives as long as the pod)."""
        if self._volumes is not None:
            return self._volumes
        made: dict[str, Path] = {}
        for volume in self.spec.get("volumes") or ():
            vname = str(volume["name"])
            folder = self.workdir / "volumes" / vname
            if "emptyDir" in volume:
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o777)  # as the kubelet makes it: any uid may write
            elif "configMap" in volume:
                cm = volume["configMap"]["name"]
                if cm not in self.config_maps:
                    raise PodmanError(f"volume {vname}: ConfigMap {cm} not given to the pod runner")
                self._write_items(folder, self.config_maps[cm], volume["configMap"].get("items"))
            elif "downwardAPI" in volume:
                self._write_items(folder, self._downward(vname, volume["downwardAPI"]), None)
            elif "secret" in volume:
                secret = volume["secret"]["secretName"]
                if secret not in self.secrets and volume["secret"].get("optional"):
                    folder.mkdir(parents=True, exist_ok=True)  # an optional Secret that is missing: empty
                elif secret not in self.secrets:
                    raise PodmanError(f"volume {vname}: Secret {secret} not given to the pod runner")
                else:
                    self._write_items(folder, self.secrets[secret], volume["secret"].get("items"))
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    raise PodmanError(f"volume {vname}: claim {claim} not given to the pod runner")
                folder = self.claims[claim]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o777)
            else:
                raise PodmanError(f"volume {vname}: kind {sorted(volume)} is not supported by the pod runner")
            made[vname] = folder
        self._volumes = made
        return made

    def _downward(self, vname: str, source: Mapping[str, Any]) -> dict[str, str]:
        """``metadata.annotations['key']`` items, as the kubelet projects them (the others are not needed)."""
        out: dict[str, str] = {}
        for item in source.get("items") or ():
            path = (item.get("fieldRef") or {}).get("fieldPath", "")
            key = path.removeprefix("metadata.annotations['").removesuffix("']")
            if key == path or key not in self.annotations:
                raise PodmanError(f"volume {vname}: field {path!r} is not an annotation given to the pod runner")
            out[str(item["path"])] = self.annotations[key]
        return out

    @staticmethod
    def _write_items(folder: Path, data: Mapping[str, str], items: list[dict[str, str]] | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pairs = [(item["key"], item["path"]) for item in items] if items else [(key, key) for key in data]
        for key, rel in pairs:
            if key not in data:
                raise PodmanError(f"key {key} missing from the volume's data")
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key])
            target.chmod(0o644)

    def _mounts(self, container: Mapping[str, Any]) -> list[tuple[Path, str, bool]]:
        volumes = self.volumes()
        mounts: list[tuple[Path, str, bool]] = []
        for mount in container.get("volumeMounts") or ():
            host = volumes[mount["name"]]
            if mount.get("subPath"):
                host = host / mount["subPath"]
                if not host.exists():
                    raise PodmanError(f"{container['name']}: subPath {mount['subPath']} does not exist in "
                                      f"volume {mount['name']}")
            mounts.append((host, str(mount["mountPath"]), bool(mount.get("readOnly"))))
        return mounts

    # ------------------------------------------------------------------ env

    def _env(self, container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or ():
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                continue  # fieldRef and friends: nothing a single test pod can answer
            data = self.secrets.get(ref["name"])
            if data is None or ref["key"] not in data:
                raise PodmanError(f"{container['name']}: env {item['name']} needs Secret {ref['name']} "
                                  f"key {ref['key']}, not given to the pod runner")
            env[item["name"]] = data[ref["key"]]
        return env

    # ------------------------------------------------------------------ run

    def _run(self, container: Mapping[str, Any]) -> ContainerHandle:
        env = self._env(container)
        command = [_expand(str(part), env) for part in [*(container.get("command") or ()),
                                                         *(container.get("args") or ())]]
        image = self.images.get(container["image"], container["image"])
        memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        user, security = self._security(container)
        handle = self.podman.run(image, command, env=env, mounts=self._mounts(container),
                                 name=f"{self.name}-{container['name']}-{int(time.time() * 1000) % 10**8}",
                                 detach=True, memory=_podman_memory(memory), termination_log=True,
                                 user=user, extra_args=security)
        assert isinstance(handle, ContainerHandle)
        self.handles[str(container["name"])] = handle
        return handle

    def _security(self, container: Mapping[str, Any]) -> tuple[str | None, list[str]]:
        """The pod's and the container's securityContext as a kubelet applies them: user and group,
        fsGroup as a supplementary group, no new privileges, dropped and added capabilities."""
        pod = dict(self.spec.get("securityContext") or {})
        mine = {**pod, **dict(container.get("securityContext") or {})}
        user = None
        if mine.get("runAsUser") is not None:
            user = str(mine["runAsUser"]) + (f":{mine['runAsGroup']}" if mine.get("runAsGroup") is not None else "")
        args = [f"--group-add={pod['fsGroup']}"] if pod.get("fsGroup") is not None else []
        if mine.get("allowPrivilegeEscalation") is False:
            args.append("--security-opt=no-new-privileges")
        capabilities = dict(mine.get("capabilities") or {})
        args += [f"--cap-drop={c.lower()}" for c in capabilities.get("drop") or ()]
        args += [f"--cap-add={c.lower()}" for c in capabilities.get("add") or ()]
        return user, args

    def result(self, container: Mapping[str, Any], handle: ContainerHandle) -> ContainerResult:
        code = handle.exit_code()
        logs = handle.logs()
        message = (handle.termination_message() or "").strip()
        if not message and code and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = "\n".join(logs.splitlines()[-_FALLBACK_LINES:])[-_FALLBACK_BYTES:]
        return ContainerResult(str(container["name"]), -1 if code is None else code, message, logs)

    def run_init(self, timeout: float = 600.0) -> list[ContainerResult]:
        """Every init container in order, each to completion; :class:`InitContainerFailed` on the first that fails."""
        results = []
        for container in self.spec.get("initContainers") or ():
            handle = self._run(container)
            handle.wait(timeout=timeout)
            result = self.result(container, handle)
            results.append(result)
            if result.exit_code != 0:
                raise InitContainerFailed(result)
        return results

    def start(self) -> dict[str, ContainerHandle]:
        """Start the (main) containers, detached."""
        for container in self.spec.get("containers") or ():
            self._run(container)
        return self.handles

    def container(self, name: str) -> Mapping[str, Any]:
        for container in [*(self.spec.get("initContainers") or ()), *(self.spec.get("containers") or ())]:
            if container["name"] == name:
                return dict(container)
        raise KeyError(name)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Poll each container's readiness probe (httpGet on loopback) until all answer 2xx."""
        deadline = time.monotonic() + timeout
        for container in self.spec.get("containers") or ():
            probe = (container.get("readinessProbe") or {}).get("httpGet")
            if probe is None:
                continue
            url = f"http://127.0.0.1:{probe['port']}{probe.get('path', '/')}"
            handle = self.handles[str(container["name"])]
            while True:
                if handle.exit_code() is not None:
                    result = self.result(container, handle)
                    raise AssertionError(f"container {result.name} exited {result.exit_code} before it was "
                                         f"ready: {result.message}\n{result.logs[-4000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if 200 <= response.status < 400:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"container {container['name']} not ready at {url} in {timeout:.0f}s:\n"
                                         f"{handle.logs()[-4000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        for handle in self.handles.values():
            handle.stop(timeout=5)


def _podman_memory(quantity: object) -> str | None:
    """A Kubernetes memory quantity as podman's --memory (bytes; it does not read Mi/Gi)."""
    if quantity is None:
        return None
    text = str(quantity)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return str(int(float(text[: -len(suffix)]) * factor))
    return str(int(float(text)))
