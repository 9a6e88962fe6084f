"""The input.urls downloader against a local HTTP server: refusal of non-public targets, the size
limit and retries. Loopback is refused by default, so the positive cases pass the test-only
``allow_networks`` switch (not reachable from the CLI)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.runtime

LOOPBACK = ["127.0.0.0/8"]
PAYLOAD = b"PAR1" + bytes(range(256)) * 40 + b"PAR1"


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int]

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        n = self.hits[path]
        if path == "/data/train.parquet":
            self._send(200, PAYLOAD)
        elif path == "/resolve":
            self._send(200, PAYLOAD, {"Content-Disposition": 'attachment; filename="dolly.parquet"'})
        elif path == "/flaky.parquet":
            self._send(503, b"busy") if n <= 2 else self._send(200, PAYLOAD)
        elif path == "/down":
            self._send(503, b"down")
        elif path == "/missing":
            self._send(404, b"nope")
        elif path == "/big-declared":
            self._send(200, b"x" * 10, {"Content-Length": str(10**12)})
        elif path == "/big-undeclared":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"y" * 1024)
            self.close_connection = True
        elif path == "/drip":  # a body dripped one byte at a time: every read is well inside the socket timeout
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            self.close_connection = True
        elif path == "/to-metadata":
            self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/to-local":
            self._send(302, headers={"Location": "/data/train.parquet"})
        else:
            self._send(404)


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, int]]]:
    hits: dict[str, int] = {}
    handler = type("H", (_Handler,), {"hits": hits})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()
    srv.server_close()


def test_downloads_with_the_allow_list(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import download_all

    url, _ = http_server
    paths = download_all(
        [f"{url}/data/train.parquet?download=true", f"{url}/resolve", f"{url}/to-local"],
        tmp_path,
        allow_networks=LOOPBACK,
        backoff=0.01,
    )
    assert [p.name for p in paths] == ["train.parquet", "dolly.parquet", "2-train.parquet"]
    assert all(p.read_bytes() == PAYLOAD for p in paths)
    assert not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/data/train.parquet",
        "http://localhost:{port}/data/train.parquet",
        "http://[::1]:{port}/data/train.parquet",
        "http://10.1.2.3/x.parquet",
        "http://192.168.0.10/x.parquet",
        "http://172.16.5.4/x.parquet",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.parquet",
        "http://0.0.0.0:{port}/x",
        "http://[::ffff:127.0.0.1]:{port}/x",
        "http://[::127.0.0.1]:{port}/x",
        "http://[::ffff:0:127.0.0.1]:{port}/x",
        "http://[64:ff9b::127.0.0.1]:{port}/x",
        "http://[2002:7f00:1::1]:{port}/x",
        "http://[::169.254.169.254]/latest/meta-data/",
        "http://168.63.129.16/machine?comp=goalstate",
        "file:///etc/passwd",
        "ftp://example.com/x.parquet",
    ],
)
def test_refuses_non_public_targets(http_server: tuple[str, dict[str, int]], tmp_path: Path, target: str) -> None:
    from kaito_presets.runtime.download import RefusedTarget, download

    url, hits = http_server
    port = url.rsplit(":", 1)[1]
    with pytest.raises(RefusedTarget):
        download(target.format(port=port), tmp_path, attempts=1)
    assert hits == {}, "a refused target must not be contacted"
    assert list(tmp_path.iterdir()) == []


def test_redirect_to_a_private_address_is_refused(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import RefusedTarget, download

    url, hits = http_server
    with pytest.raises(RefusedTarget, match=r"169\.254\.169\.254"):
        download(f"{url}/to-metadata", tmp_path, allow_networks=LOOPBACK, attempts=1)
    assert hits == {"/to-metadata": 1}


def test_size_limit(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import TooLarge, download

    url, _ = http_server
    with pytest.raises(TooLarge, match="over the limit"):
        download(f"{url}/big-declared", tmp_path, max_bytes=1024, allow_networks=LOOPBACK)
    with pytest.raises(TooLarge, match="over the limit"):
        download(f"{url}/big-undeclared", tmp_path, max_bytes=16 * 1024, allow_networks=LOOPBACK)
    assert list(tmp_path.iterdir()) == [], "no partial file may be left behind"
    # Exactly at the limit is fine.
    p = download(f"{url}/data/train.parquet", tmp_path, max_bytes=len(PAYLOAD), allow_networks=LOOPBACK)
    assert p.stat().st_size == len(PAYLOAD)


def test_retries_transient_failures_only(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import DownloadError, download

    url, hits = http_server
    p = download(f"{url}/flaky.parquet", tmp_path, attempts=4, backoff=0.01, allow_networks=LOOPBACK)
    assert p.read_bytes() == PAYLOAD and hits["/flaky.parquet"] == 3
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download(f"{url}/down", tmp_path, attempts=3, backoff=0.01, allow_networks=LOOPBACK)
    assert hits["/down"] == 3
    with pytest.raises(DownloadError, match="404"):
        download(f"{url}/missing", tmp_path, attempts=3, backoff=0.01, allow_networks=LOOPBACK)
    assert hits["/missing"] == 1, "a 404 is not retried"


def test_cli_refuses_loopback(
    http_server: tuple[str, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaito_presets.runtime.download import main

    url, hits = http_server
    assert main(["--dest", str(tmp_path), "--attempts", "1", f"{url}/data/train.parquet"]) == 1
    assert "not a public address" in capsys.readouterr().err
    assert hits == {}


def test_a_dripped_body_meets_the_total_deadline(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import DeadlineExceeded, download

    url, hits = http_server
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 1\.0 s"):
        download(f"{url}/drip", tmp_path, timeout=5, deadline=1.0, attempts=3, backoff=0.01, allow_networks=LOOPBACK)
    assert time.monotonic() - start < 3.5, "the deadline is total, not per read"
    assert hits["/drip"] == 1, "a file past its deadline is not tried again"
    assert list(tmp_path.iterdir()) == [], "no partial file may be left behind"


def test_the_deadline_covers_the_retries(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    from kaito_presets.runtime.download import DeadlineExceeded, download

    url, _ = http_server
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        download(f"{url}/down", tmp_path, attempts=10, backoff=1.0, deadline=1.5, allow_networks=LOOPBACK)
    assert time.monotonic() - start < 3.0


def test_logs_and_errors_never_show_a_query_string(
    http_server: tuple[str, dict[str, int]], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kaito_presets.runtime.download import DownloadError, download, main

    url, _ = http_server
    caplog.set_level(logging.DEBUG, logger="kaito.download")
    download(f"{url}/data/train.parquet?sig=SECRET", tmp_path, allow_networks=LOOPBACK)
    with pytest.raises(DownloadError) as raised:
        download(f"{url}/missing?sig=SECRET", tmp_path, attempts=2, backoff=0.01, allow_networks=LOOPBACK)
    assert "SECRET" not in str(raised.value) and "?REDACTED" in str(raised.value)
    with pytest.raises(DownloadError) as raised:
        download(f"{url}/down?sig=SECRET", tmp_path, attempts=2, backoff=0.01, allow_networks=LOOPBACK)
    assert "SECRET" not in str(raised.value)
    assert main(["--dest", str(tmp_path), "--attempts", "1", f"{url}/x?sig=SECRET"]) == 1
    assert "SECRET" not in caplog.text and "train.parquet?REDACTED" in caplog.text
    assert "SECRET" not in capsys.readouterr().err


def test_cli_takes_the_deadline() -> None:
    from kaito_presets.runtime.download import build_parser

    assert build_parser().parse_args(["--deadline", "90", "https://example.com/d"]).deadline == 90.0


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_no_deadline_means_no_watchdog(http_server: tuple[str, dict[str, int]], tmp_path: Path) -> None:
    import math

    from kaito_presets.runtime.download import download

    url, _ = http_server
    path = download(f"{url}/data/train.parquet", tmp_path, deadline=math.inf, allow_networks=LOOPBACK)
    time.sleep(0.2)  # a watchdog thread started with an infinite interval would fail by now
    assert path.read_bytes() == PAYLOAD
