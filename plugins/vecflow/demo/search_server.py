"""An Elasticsearch-compatible server (noida-db) on 127.0.0.1 for the local run and the tests.

Started in its own process group and stopped by group id, so nothing it spawns outlives it."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int, data_dir: Path) -> list[str]:
    """The noida-db binary's command line: Elasticsearch's API on 127.0.0.1:port, data in data_dir.
    The binary, not its Python wrapper, so that stopping the process stops the server."""
    import noida_db

    binary = Path(noida_db.__file__).parent / "noida-db"
    return [
        str(binary),
        "start",
        "--only",
        "elasticsearch",
        "--host",
        "127.0.0.1",
        "--elasticsearch-port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


class LocalSearchServer:
    def __init__(self, data_dir: Path, port: int | None = None, start_timeout_s: float = 60):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_uri(self) -> str:
        """The Airflow connection (AIRFLOW_CONN_...) that points at this server."""
        return f"elasticsearch://127.0.0.1:{self.port}"

    def _stop_orphan(self) -> bool:
        """A server left on this data directory by a run that was killed: stopped, so this one can start."""
        lines = (self.data_dir / "server.log").read_text(errors="replace").splitlines()
        found = re.search(r"already running for (.+) \(pid (\d+)\)", lines[-1] if lines else "")
        if not found or Path(found.group(1)).resolve() != self.data_dir.resolve():
            return False
        pid = int(found.group(2))
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not any(b"noida-db" in part for part in cmdline[:1]) or str(self.data_dir).encode() not in cmdline:
            return False
        log.warning("stopping a search server left on %s by an earlier run (pid %d)", self.data_dir, pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        return True

    def start(self, retry_orphan: bool = True) -> LocalSearchServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            server_command(self.port, self.data_dir),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    if retry_orphan and self._stop_orphan():
                        return self.start(retry_orphan=False)
                    lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
                    raise RuntimeError(
                        f"search server did not start: {lines[-1] if lines else 'no output'} "
                        f"(log: {self.data_dir / 'server.log'})"
                    ) from None
                time.sleep(0.2)
        log.info("Elasticsearch-compatible server on %s (data in %s)", self.url, self.data_dir)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def __enter__(self) -> LocalSearchServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
