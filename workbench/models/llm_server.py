"""The managed local LLM: llama-cpp-python's OpenAI-compatible server, owned by the workbench.

Started on 127.0.0.1 and a free port, health-checked, restarted on the same port when it
dies (so clients holding its ``base_url`` keep working), stopped at exit, and tied to the
parent process so it can never be orphaned. Strategies talk to it like any other
OpenAI-compatible endpoint.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import httpx2

from workbench.core.config import EndpointConfig
from workbench.models.assets import resolve_gguf

log = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[LocalLLMServer] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    model: str
    pid: int
    log_path: Path


class LocalLLMServer:
    """One llama.cpp server process; thread-safe ``ensure_running`` restarts it when needed."""

    host = "127.0.0.1"  # never bind beyond loopback

    def __init__(
        self,
        endpoint: EndpointConfig,
        log_dir: Path,
        port: int | None = None,
        start_timeout: float = 60.0,
        watchdog_interval: float = 0.25,
    ) -> None:
        self.endpoint = endpoint
        self.model_path = resolve_gguf(endpoint.gguf)
        self.model_name = endpoint.model or self.model_path.stem
        self.port = port or free_port(self.host)
        self.log_path = Path(log_dir) / f"llm-server-{self.port}.log"
        self.start_timeout = start_timeout
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._interval = watchdog_interval
        _LIVE.add(self)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        e = self.endpoint
        return [
            sys.executable,
            "-m",
            "workbench.models._llama_serve",
            str(os.getpid()),
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(e.n_ctx),
            "--n_threads",
            str(e.n_threads),
            # defaults double RAM / silently cut off the streaming request: see field notes
            "--logits_all",
            "False",
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ServerInfo:
        """Start (or confirm) the server and wait until it answers ``/v1/models``."""
        with self._lock:
            self._stopping.clear()
            if not self.alive():
                self._spawn()
            self._wait_healthy()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="llm-server-watchdog", daemon=True)
                self._watchdog.start()
            assert self._proc is not None
            return ServerInfo(self.base_url, self.model_name, self._proc.pid, self.log_path)

    ensure_running = start

    def _spawn(self) -> None:
        if self._proc is not None:  # a previous process died: this is a restart
            self.restarts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:
            logf.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} {self.model_path.name}\n".encode())
            logf.flush()
            env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_SECRET"))}
            self._proc = subprocess.Popen(
                self.command(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise RuntimeError(
                    f"LLM server exited with code {code} while starting; log: {self.log_path}\n" + self._log_tail()
                )
            try:
                if httpx2.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"LLM server not healthy after {self.start_timeout:.0f}s; log: {self.log_path}")

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval):
            if not self.alive():
                with self._lock:
                    if self._stopping.is_set() or self.alive():
                        continue
                    code = self._proc.returncode if self._proc else None
                    log.warning("LLM server on port %s died (code %s); restarting", self.port, code)
                    try:
                        self._spawn()
                        self._wait_healthy()
                    except Exception:  # keep watching; the next request reports the failure
                        log.exception("LLM server restart failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and stop watching it."""
        self._stopping.set()
        with self._lock:
            proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._watchdog and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2)

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()
