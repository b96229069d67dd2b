"""The managed local LLM: llama-cpp-python's OpenAI-compatible server, owned by the workbench.

Started on 127.0.0.1 and a free port, health-checked, restarted on the same port when it
dies (so clients holding its ``base_url`` keep working), stopped at exit, and tied to the
parent process so it can never be orphaned. Strategies talk to it like any other
OpenAI-compatible endpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import EndpointConfig
from workbench.models.assets import resolve_gguf
from workbench.models.served import ManagedServer, free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    model: str
    pid: int
    log_path: Path


class LocalLLMServer(ManagedServer):
    """One llama.cpp server process; thread-safe ``ensure_running`` restarts it when needed."""

    name = "LLM server"
    log_stem = "llm-server"

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
        super().__init__(log_dir, port, start_timeout)
        self.restarts = 0
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._interval = watchdog_interval

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"{self.base_url}/models"

    def log_header(self) -> str:
        return self.model_path.name

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
            *(["--chat_format", e.chat_format] if e.chat_format else []),
        ]

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
        super()._spawn()

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
        super().stop(timeout)
        if self._watchdog and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2)


__all__ = ["LocalLLMServer", "ServerInfo", "free_port"]
