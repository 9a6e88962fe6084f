"""Debian's ``docker-registry`` on loopback for tests (plain HTTP, optional htpasswd), shared by the
runtime tests and the real-node tests.

    from registry_support import Registry, start_registry
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kaito_core.testing import free_port

REGISTRY_APT_HINT = "install Debian's registry with: apt-get install -y docker-registry apache2-utils"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    user: str | None = None
    password: str | None = None

    def docker_config(self, path: Path, *, password: str | None = None) -> Path:
        """Write a .dockerconfigjson as a kubernetes.io/dockerconfigjson Secret would mount it."""
        import base64

        pw = password if password is not None else self.password
        auth = base64.b64encode(f"{self.user}:{pw}".encode()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path


def start_registry(root: Path, htpasswd: tuple[str, str] | None) -> Iterator[Registry]:
    binary = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if binary is None:
        pytest.fail(f"the docker-registry binary is missing: {REGISTRY_APT_HINT}")
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "kaito-test"},
    }
    user = password = None
    if htpasswd:
        htpasswd_bin = shutil.which("htpasswd")
        if htpasswd_bin is None:
            pytest.fail(f"the htpasswd binary is missing: {REGISTRY_APT_HINT}")
        user, password = htpasswd
        out = subprocess.run([htpasswd_bin, "-Bbn", user, password], check=True, capture_output=True, text=True)
        (root / "htpasswd").write_text(out.stdout)
        config["auth"] = {"htpasswd": {"realm": "kaito-test", "path": str(root / "htpasswd")}}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.05)
        yield Registry(host=f"127.0.0.1:{port}", root=root, user=user, password=password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
