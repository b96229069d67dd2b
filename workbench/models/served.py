"""A server the workbench runs as a child process on 127.0.0.1: the llama.cpp LLM server and the speech server.

One place owns what both need: a free loopback port, a log file, no API keys in the child's environment, a
health check with a deadline that reports the end of the log, SIGTERM then SIGKILL, and a stop at interpreter
exit, so a crashed run never leaves a server behind (the child also exits when its parent dies).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx2

_LIVE: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ManagedServer:
    """One child process serving HTTP on ``host:port``; subclasses give its :meth:`command` and health URL."""

    host = "127.0.0.1"  # never bind beyond loopback
    name = "server"  # for messages and the log file's name
    log_stem = "server"

    def __init__(self, log_dir: Path | str, port: int | None = None, start_timeout: float = 60.0) -> None:
        self.port = port or free_port(self.host)
        self.log_path = Path(log_dir) / f"{self.log_stem}-{self.port}.log"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        _LIVE.add(self)

    # -- what a subclass says ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def health_url(self) -> str:
        raise NotImplementedError

    def log_header(self) -> str:
        return ""

    def child_env(self, env: dict[str, str]) -> dict[str, str]:
        return env

    def on_healthy(self, response: httpx2.Response) -> None:
        """Called with the first 200 answer of the health URL."""

    # -- the process --------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:
            logf.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} {self.log_header()}\n".encode())
            logf.flush()
            env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_SECRET"))}
            self._proc = subprocess.Popen(
                self.command(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.child_env(env),
                start_new_session=True,
            )

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise RuntimeError(
                    f"{self.name} exited with code {code} while starting; log: {self.log_path}\n" + self._log_tail()
                )
            try:
                r = httpx2.get(self.health_url, timeout=1.0)
                if r.status_code == 200:
                    self.on_healthy(r)
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"{self.name} not healthy after {self.start_timeout:.0f}s; log: {self.log_path}\n" + self._log_tail()
        )

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL); the port is free when this returns."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def __enter__(self) -> Any:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


__all__ = ["ManagedServer", "free_port"]
