"""Shared fixtures: the real model stack (integration), a network guard, and a leak check."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
for _var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):  # would switch end of turn to the cloud
    os.environ.pop(_var, None)

SERVER_MARK = "workbench.models._llama_serve"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def _server_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        try:
            # only this session's children: other test sessions on the machine start servers too
            if p.info["ppid"] == os.getpid() and SERVER_MARK in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def no_server_survives() -> Iterator[None]:
    """Fails the session if any managed LLM server process outlives the tests that started it."""
    before = {p.pid for p in _server_processes()}
    yield
    import gc

    from workbench.models.served import _stop_all

    gc.collect()
    _stop_all()  # what atexit does; anything still alive after this is a leak
    psutil.wait_procs([p for p in _server_processes() if p.pid not in before], timeout=5)
    leaked = [p.pid for p in _server_processes() if p.pid not in before]
    assert not leaked, f"LLM server processes survived the test session: {leaked}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """One real embedded stack (SmolLM2 server, Whisper, Piper, Silero, MiniLM) for all integration tests."""
    from workbench.core.config import WorkbenchConfig
    from workbench.models import ModelStack

    s = ModelStack(WorkbenchConfig(state_dir=tmp_path_factory.mktemp("state")))
    yield s
    s.close()


class NetworkGuard:
    """Blocks and records every connection to a non-loopback address."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, address: object) -> None:
        if not isinstance(address, tuple):
            return  # a unix socket path
        host = str(address[0])
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return
        except ValueError:
            pass  # a host name: not loopback
        self.attempts.append(host)
        raise OSError(f"network blocked by test guard: {host}")


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    guard = NetworkGuard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self: socket.socket, address: object) -> None:
        guard.check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        guard.check(address)
        return real_connect_ex(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1") and not str(host).startswith("127."):
            guard.attempts.append(str(host))
            raise socket.gaierror(f"network blocked by test guard: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard
