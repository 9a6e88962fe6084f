"""Serve an ASGI app (the inference server, a stub) under uvicorn in a background thread, for tests and
benchmarks: ``with ServerThread(app) as srv: httpx.get(srv.url + "/health")``. uvicorn is imported only
here, when one is started (the operator itself does not depend on it)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["ServerThread"]


class ServerThread:
    """Run an app under uvicorn in a daemon thread on a loopback port (0: a free one); lifespan on."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, name="kaito-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
