"""Debian's ``docker-registry`` on loopback: the local registry of tests and of ``kaito up --real-nodes``.

Plain HTTP on ``127.0.0.1:<port>`` (optionally htpasswd), its data under a
folder of the caller's. The process dies with its parent
(:class:`~kaito_core.testing.process.ManagedProcess`), so a killed run leaves no
registry behind.

    with LocalRegistry(folder) as registry:
        registry.host                     # "127.0.0.1:PORT"
        registry.has("kaito/kaito-phi-3-mini-4k-instruct", "0.2.0")
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from kaito_core.testing.controlplane import free_port
from kaito_core.testing.process import ManagedProcess, wait_until

__all__ = ["REGISTRY_APT_HINT", "LocalRegistry", "RegistryMissingError"]

REGISTRY_APT_HINT = "install Debian's registry with: apt-get install -y docker-registry apache2-utils"

_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


class RegistryMissingError(FileNotFoundError):
    """``docker-registry`` (or ``htpasswd``) is not installed."""


class LocalRegistry:
    """One ``docker-registry serve`` process; use as a context manager or call start/stop."""

    def __init__(self, root: Path, htpasswd: tuple[str, str] | None = None, *, start_timeout: float = 20):
        self.root = root
        self.user: str | None = htpasswd[0] if htpasswd else None
        self.password: str | None = htpasswd[1] if htpasswd else None
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: ManagedProcess | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry's name in image references."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("docker-registry") or (
            "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)
        if binary is None:
            raise RegistryMissingError(f"the docker-registry binary is missing: {REGISTRY_APT_HINT}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "kaito-local"},
        }
        if self.user is not None:
            htpasswd_bin = shutil.which("htpasswd")
            if htpasswd_bin is None:
                raise RegistryMissingError(f"the htpasswd binary is missing: {REGISTRY_APT_HINT}")
            out = subprocess.run([htpasswd_bin, "-Bbn", self.user, self.password or ""], check=True,
                                 capture_output=True, text=True)
            (self.root / "htpasswd").write_text(out.stdout)
            config["auth"] = {"htpasswd": {"realm": "kaito-local", "path": str(self.root / "htpasswd")}}
        (self.root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self._proc = ManagedProcess("docker-registry", [binary, "serve", str(self.root / "config.yml")], self.root)
        self._proc.start()
        wait_until(self._listening, self.start_timeout, "docker-registry", interval=0.05)

    def _listening(self) -> bool:
        assert self._proc is not None
        self._proc.check_alive()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def docker_config(self, path: Path, *, password: str | None = None) -> Path:
        """Write a ``.dockerconfigjson`` as a ``kubernetes.io/dockerconfigjson`` Secret would mount it."""
        pw = password if password is not None else self.password
        auth = base64.b64encode(f"{self.user}:{pw}".encode()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def push_podman_image(self, local_ref: str, name: str, *, compression: str | None = None) -> str:
        """``podman push`` a local image as ``<host>/<name>`` (e.g. ``curlimages/curl:latest``); returns that ref.

        Layers the registry has already are not sent again (podman's blob cache knows their digests), so
        a code change pushes only the image's top layer. ``compression``: ``zstd`` packs a large image
        about twice as fast as gzip on two cores, and containerd unpacks it natively."""
        target = f"{self.host}/{name}"
        extra = [f"--compression-format={compression}"] if compression else []
        proc = subprocess.run(["podman", "push", "--quiet", "--tls-verify=false", *extra, local_ref,
                               f"docker://{target}"], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"podman push {local_ref} {target} failed: {proc.stderr.strip()[-2000:]}")
        return target

    def has(self, repository: str, tag: str) -> bool:
        """Whether ``repository:tag`` is in the registry (a manifest HEAD, anonymous)."""
        request = urllib.request.Request(f"http://{self.host}/v2/{repository}/manifests/{tag}", method="HEAD",
                                         headers={"Accept": _MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status) == 200
        except urllib.error.HTTPError:
            return False
