"""Run containers the way a kubelet would, for tests: podman with Debian's runc, as root, no registry.

    with Podman() as podman:
        done = podman.run("localhost/kaito-runtime:0.1.0", ["python", "-c", "print(1)"], user="1000")
        assert done.returncode == 0, done.stderr
        handle = podman.run(image, ["python", "-m", "..."], detach=True, termination_log=True)
        ...
        handle.wait(); handle.termination_message()

Every podman call gets its own ``containers.conf`` (``CONTAINERS_CONF``): runtime runc (crun cannot run
here: "cgroups in hybrid mode not supported"), cgroupfs, a file events logger (no journald), and default
rlimits at or below the host's hard limits (the process lacks CAP_SYS_RESOURCE, so podman's defaults fail).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "ContainerHandle",
    "Mount",
    "Podman",
    "PodmanError",
    "containers_conf",
    "containers_env",
    "find_runc",
]

TERMINATION_LOG = "/dev/termination-log"
# buildah's chroot isolation already caps RLIMIT_NPROC at 32768 and cannot raise it back.
_NPROC_CAP = 32768

Mount = tuple[str | Path, str, bool]
"""(host path, container path, read-only): a folder or a single file."""


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its stderr."""


def find_runc() -> str:
    """Debian's runc by full path (``/usr/bin/runc`` links to ``/usr/sbin/runc``)."""
    for candidate in ("/usr/bin/runc", "/usr/sbin/runc", shutil.which("runc")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PodmanError("runc not found: apt-get install runc")


def _hard_limit(which: int, cap: int) -> int:
    _, hard = resource.getrlimit(which)
    return cap if hard == resource.RLIM_INFINITY else min(hard, cap)


def containers_conf_text() -> str:
    nofile = _hard_limit(resource.RLIMIT_NOFILE, 1 << 20)
    nproc = _hard_limit(resource.RLIMIT_NPROC, _NPROC_CAP)
    return (
        "# Written by kaito_core.testing.podman; rewritten on every run.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "\n[engine.runtimes]\n"
        f'runc = ["{find_runc()}"]\n'
    )


def _config_dir() -> Path:
    override = os.environ.get("KAITO_CACHE_DIR")
    if override:
        return Path(override) / "containers"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kaito-core" / "containers"


def containers_conf() -> Path:
    """Write (only when it changed) and return kaito-core's containers.conf."""
    path = _config_dir() / "containers.conf"
    text = containers_conf_text()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def containers_env() -> dict[str, str]:
    """The environment for podman and buildah calls."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


@dataclass
class ContainerHandle:
    """A detached container started by :class:`Podman`."""

    podman: Podman
    name: str
    termination_log: Path | None = None

    def wait(self, timeout: float = 120.0) -> int:
        """Block until the container exits; its exit code."""
        out = self.podman.call(["wait", self.name], timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def exit_code(self) -> int | None:
        return self.podman.exit_code(self.name)

    def running(self) -> bool:
        return self.podman.state(self.name) == "running"

    def logs(self) -> str:
        return self.podman.logs(self.name)

    def stop(self, timeout: int = 10) -> None:
        self.podman.stop(self.name, timeout=timeout)

    def termination_message(self) -> str | None:
        """What the container wrote to /dev/termination-log (None when it had none mounted)."""
        if self.termination_log is None or not self.termination_log.exists():
            return None
        return self.termination_log.read_text()


@dataclass
class Podman:
    """A podman client for tests; a context manager that removes every container it started."""

    runtime: str = field(default_factory=find_runc)
    started: list[str] = field(default_factory=list)
    _scratch: Path | None = None

    def __post_init__(self) -> None:
        if shutil.which("podman") is None:
            raise PodmanError("podman not found: apt-get install podman runc")

    def __enter__(self) -> Podman:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def call(self, args: Sequence[str], *, timeout: float = 120.0, check: bool = True) -> str:
        done = self._exec(args, timeout=timeout)
        if check and done.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} -> {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def _exec(self, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = ["podman", "--runtime", self.runtime, "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=containers_env())

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="kaito-podman-"))
        return self._scratch

    def run(
        self,
        image: str,
        command: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        user: str | None = None,
        network: str = "host",
        name: str | None = None,
        detach: bool = False,
        memory: str | None = None,
        workdir: str | None = None,
        entrypoint: str | None = None,
        termination_log: bool = False,
        extra_args: Sequence[str] = (),
        timeout: float = 300.0,
    ) -> ContainerHandle | subprocess.CompletedProcess[str]:
        """Run ``command`` in ``image``.

        Detached: a :class:`ContainerHandle`. Otherwise: the finished process (stdout, stderr, returncode);
        the container stays until :meth:`cleanup` so its exit code and termination log can be read.
        ``termination_log`` mounts a fresh, writable host file at /dev/termination-log, as a kubelet does.
        """
        name = name or f"kaito-test-{uuid.uuid4().hex[:10]}"
        argv = ["run", "--name", name, "--network", network, "--pull", "never"]
        argv += ["--detach"] if detach else []
        argv += ["--user", user] if user is not None else []
        argv += ["--memory", memory] if memory else []
        argv += ["--workdir", workdir] if workdir else []
        argv += ["--entrypoint", entrypoint] if entrypoint is not None else []
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        log_file: Path | None = None
        if termination_log:
            log_file = self._scratch_dir() / f"{name}.termination-log"
            log_file.write_text("")
            log_file.chmod(0o666)  # the container may run as any uid
            mounts = [*mounts, (log_file, TERMINATION_LOG, False)]
        for host, target, read_only in mounts:
            argv += ["--volume", f"{Path(host).resolve()}:{target}:{'ro' if read_only else 'rw'}"]
        argv += [*extra_args, image, *command]
        self.started.append(name)
        if detach:
            self.call(argv, timeout=timeout)
            return ContainerHandle(self, name, log_file)
        return self._exec(argv, timeout=timeout)

    def logs(self, name: str) -> str:
        done = self._exec(["logs", name], timeout=60)
        return done.stdout + done.stderr

    def state(self, name: str) -> str | None:
        done = self._exec(["inspect", "--format", "{{.State.Status}}", name], timeout=60)
        return done.stdout.strip() if done.returncode == 0 else None

    def exit_code(self, name: str) -> int | None:
        """The exit code once the container has exited; None while it runs (or when it is unknown)."""
        done = self._exec(["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name], timeout=60)
        if done.returncode != 0:
            return None
        status, _, code = done.stdout.strip().partition(" ")
        return int(code) if status in ("exited", "stopped") else None

    def stop(self, name: str, timeout: int = 10) -> None:
        self.call(["stop", "--time", str(timeout), name], timeout=timeout + 60, check=False)

    def rm(self, name: str) -> None:
        self.call(["rm", "--force", "--volumes", name], timeout=120, check=False)
        with contextlib.suppress(ValueError):
            self.started.remove(name)

    def wait_until(self, name: str, predicate: str, timeout: float = 60.0) -> bool:
        """Poll the logs until ``predicate`` appears in them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate in self.logs(name):
                return True
            time.sleep(0.2)
        return False

    def cleanup(self) -> None:
        for name in list(self.started):
            self.rm(name)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
