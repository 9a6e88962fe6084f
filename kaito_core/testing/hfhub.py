"""A loopback Hugging Face Hub for tests: one local model directory served as one repository at one revision.

It answers exactly what ``huggingface_hub`` (2.x) ``snapshot_download`` and ``hf_hub_download`` ask:

* ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}`` — the repo info (``sha``, ``siblings``);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`` — the file listing (``oid``, ``size``, ``lfs``);
* ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` — ``X-Repo-Commit``, ``ETag`` (and ``X-Linked-Etag`` /
  ``X-Linked-Size`` for LFS files), ``Content-Length``, single ``Range: bytes=a-b`` requests;
* ``GET /api/agent-harnesses`` — the client's user-agent registry (an empty one; asked at most once a day).

No ``X-Xet-*`` header is ever sent and no tree entry has a ``xetHash``: the client never switches to Xet.
``revision`` is the pinned 40-hex commit; the branch ``main`` resolves to it. Errors carry the Hub's
``X-Error-Code`` so the client raises its own typed errors: an unknown revision is 404 ``RevisionNotFound``,
an unknown repository 404 ``RepoNotFound``, an unknown file 404 ``EntryNotFound``. With ``token`` set, a
request without ``Authorization: Bearer <token>`` is 401 (``GatedRepo`` when no token was sent, "Invalid
credentials in Authorization header" when a wrong one was).

    with HubServer(model_dir, repo="org/tiny", token="hf_x") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        assert all(p.startswith("/api/models/org/tiny") or "/resolve/" in p for _, p in hub.requests)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_REVISION = "0123456789abcdef0123456789abcdef01234567"
_LFS_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".ckpt", ".pth", ".h5", ".onnx", ".msgpack"}
_LFS_MIN_SIZE = 10 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class RepoFile:
    path: str  # relative, "/"-separated
    local: Path
    size: int
    git_oid: str  # the git blob sha1 (of the content, or of the LFS pointer)
    sha256: str
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _scan(model_dir: Path) -> dict[str, RepoFile]:
    files: dict[str, RepoFile] = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        data = p.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = p.suffix in _LFS_SUFFIXES or len(data) >= _LFS_MIN_SIZE
        if lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            oid = _git_blob_sha1(pointer)
        else:
            oid = _git_blob_sha1(data)
        files[rel.as_posix()] = RepoFile(rel.as_posix(), p, len(data), oid, sha256, lfs)
    return files


class HubServer:
    """``ThreadingHTTPServer`` on 127.0.0.1:0 serving ``model_dir`` as ``repo`` at ``revision``."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        repo: str = "org/tiny",
        revision: str = DEFAULT_REVISION,
        token: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            raise ValueError(f"revision must be a 40-hex commit sha, got {revision!r}")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise ValueError(f"repo must be ORG/NAME, got {repo!r}")
        self.model_dir = Path(model_dir)
        self.repo = repo
        self.revision = revision
        self.token = token
        self.files = _scan(self.model_dir)
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer((host, 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="hfhub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ the record

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path without the query) of every request so far, in order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    # ------------------------------------------------------------------ answers

    def resolve(self, rev: str) -> str | None:
        return self.revision if rev in (self.revision, "main") else None

    def repo_info(self) -> dict[str, Any]:
        return {
            "_id": hashlib.sha1(self.repo.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": self.repo,
            "modelId": self.repo,
            "author": self.repo.split("/", 1)[0],
            "sha": self.revision,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": "manual" if self.token else False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": [{"rfilename": f} for f in sorted(self.files)],
        }

    def tree(self, path: str, recursive: bool) -> list[dict[str, Any]] | None:
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(f.startswith(prefix) for f in self.files):
            return None
        entries: dict[str, dict[str, Any]] = {}
        for name, f in sorted(self.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    oid = hashlib.sha1(folder.encode(), usedforsecurity=False).hexdigest()
                    entries.setdefault(folder, {"type": "directory", "oid": oid, "size": 0, "path": folder})
            if not recursive and len(parts) > 1:
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": name}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries[name] = entry
        return list(entries.values())


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kaito-hfhub/1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        # -------------------------------------------------------------- plumbing

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
        ) -> None:
            self.send_response(status)
            hdrs = {"Content-Length": str(len(body)), **(headers or {})}
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.end_headers()
            if body and not head:
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None, *, head: bool = False) -> None:
            body = json.dumps(obj).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head=head)

        def _error(self, status: int, code: str | None, message: str, *, head: bool = False) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._json(status, {"error": message}, headers, head=head)

        def _authorized(self, head: bool) -> bool:
            if hub.token is None:
                return True
            auth = self.headers.get("Authorization")
            if auth == f"Bearer {hub.token}":
                return True
            if not auth:
                msg = f"Access to model {hub.repo} is restricted. You must have access to it and be authenticated."
                self._error(401, "GatedRepo", msg, head=head)
            else:
                self._error(401, None, "Invalid credentials in Authorization header", head=head)
            return False

        # -------------------------------------------------------------- routing

        def do_HEAD(self) -> None:
            self._handle(head=True)

        def do_GET(self) -> None:
            self._handle(head=False)

        def _handle(self, head: bool) -> None:
            split = urlsplit(self.path)
            path = unquote(split.path)
            hub.record(self.command, path)
            query = parse_qs(split.query)
            api = f"/api/models/{hub.repo}"
            if path == "/api/agent-harnesses":  # the client's user-agent registry: an empty one
                self._json(200, {"standardEnvVars": [], "harnesses": {}}, head=head)
                return
            if path.startswith("/api/models/"):
                if path != api and not path.startswith(api + "/"):
                    self._error(404, "RepoNotFound", "Repository not found", head=head)
                    return
                if not self._authorized(head):
                    return
                rest = path[len(api) :]
                if rest in ("", "/"):
                    self._json(200, hub.repo_info(), head=head)
                    return
                m = re.fullmatch(r"/revision/([^/]+)", rest)
                if m:
                    if hub.resolve(m.group(1)) is None:
                        self._revision_not_found(m.group(1), head)
                        return
                    self._json(200, hub.repo_info(), head=head)
                    return
                m = re.fullmatch(r"/tree/([^/]+)(/.*)?", rest)
                if m:
                    if hub.resolve(m.group(1)) is None:
                        self._revision_not_found(m.group(1), head)
                        return
                    recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                    entries = hub.tree(m.group(2) or "", recursive)
                    if entries is None:
                        self._error(404, "EntryNotFound", f"{m.group(2)} does not exist on {m.group(1)}", head=head)
                        return
                    self._json(200, entries, head=head)
                    return
                self._error(404, None, "Not Found", head=head)
                return
            prefix = f"/{hub.repo}/resolve/"
            if path.startswith(prefix):
                if not self._authorized(head):
                    return
                rev, _, filename = path[len(prefix) :].partition("/")
                if hub.resolve(rev) is None:
                    self._revision_not_found(rev, head)
                    return
                self._resolve(filename, head)
                return
            if path.startswith("/") and "/resolve/" in path:
                self._error(404, "RepoNotFound", "Repository not found", head=head)
                return
            self._error(404, None, "Not Found", head=head)

        def _revision_not_found(self, rev: str, head: bool) -> None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)

        def _resolve(self, filename: str, head: bool) -> None:
            f = hub.files.get(filename)
            if f is None:
                self._error(404, "EntryNotFound", f"Entry not found: {filename}", head=head)
                return
            headers = {
                "X-Repo-Commit": hub.revision,
                "ETag": f'"{f.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'inline; filename="{Path(filename).name}"',
            }
            if f.lfs:
                headers["X-Linked-Etag"] = f'"{f.sha256}"'
                headers["X-Linked-Size"] = str(f.size)
            start, end, status = 0, f.size - 1, 200
            rng = self.headers.get("Range")
            if rng:
                m = _RANGE.match(rng.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    self._send(416, b"", {"Content-Range": f"bytes */{f.size}"}, head=head)
                    return
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
                else:  # a suffix range: the last N bytes
                    start = max(0, f.size - int(m.group(2)))
                if start >= f.size or start > end:
                    self._send(416, b"", {"Content-Range": f"bytes */{f.size}"}, head=head)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
            length = end - start + 1 if f.size else 0
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(length)}.items():
                self.send_header(k, v)
            self.end_headers()
            if head or not length:
                return
            with f.local.open("rb") as fh:
                fh.seek(start)
                remaining = length
                while remaining > 0:
                    chunk = fh.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)

    return Handler
