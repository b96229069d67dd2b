"""The embedded model stack and its lifecycle: one owner for servers and loaded models.

Every consumer (doctor, strategies, the replay harness, the production worker) builds its
components through a :class:`ModelStack`, so they share one llama.cpp server per endpoint
and one copy of each model, and ``close()`` releases all of it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit.agents import llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.plugins import openai as lk_openai

from workbench.core.config import (
    ConfigError,
    EndpointConfig,
    Factory,
    LLMFactory,
    STTConfig,
    TTSConfig,
    WorkbenchConfig,
    load_config,
)
from workbench.models import assets
from workbench.models.assets import MissingAssetError
from workbench.models.chat_client import chat_client
from workbench.models.components import build_component, check_components
from workbench.models.llm_server import LocalLLMServer


@dataclass(frozen=True)
class ResolvedEndpoint:
    """Where to send chat requests; ``server`` is set when the workbench manages it. A factory endpoint
    (``config`` an :class:`LLMFactory`) has no OpenAI URL: its ``base_url`` is the factory's own, if it takes one."""

    name: str
    config: EndpointConfig | LLMFactory
    base_url: str
    model: str
    server: LocalLLMServer | None = None

    def ensure_ready(self) -> None:
        """Cheap when healthy; restarts a managed server that died (the next request works)."""
        if self.server is not None and not self.server.alive():
            self.server.ensure_running()


def endpoint_field(name: str) -> str:
    """The config field an endpoint name comes from, for error messages: ``llm`` or ``endpoints.<name>``."""
    return "llm" if name in ("default", "") else f"endpoints.{name}"


def missing_assets(config: WorkbenchConfig) -> MissingAssetError | None:
    """Every model package ``config``'s stack needs that is not installed, as one error; None when all are.

    Only looks: nothing is loaded, assembled or started. Whisper tiny.en is always needed (its tokenizer counts
    prompt tokens); STT, TTS and embeddings are the configured ones, whether or not a run reaches them.
    """
    checks: list[Callable[[], object]] = [assets.whisper_dir]
    for ep in [config.llm, *config.endpoints.values()]:
        if isinstance(ep, EndpointConfig) and ep.kind == "local":
            checks.append(lambda gguf=ep.gguf: assets.check_gguf(gguf))
    if isinstance(config.stt, STTConfig) and config.stt.model == "base":
        checks.append(assets.whisper_base_packages)
    if isinstance(config.tts, TTSConfig):  # a factory's own packages are checked by check_components
        checks.append(assets.piper_voice if config.tts.kind == "piper" else assets.espeak_binary)
    checks.append(assets.minilm_dir)
    missing = []
    for check in checks:
        try:
            check()
        except MissingAssetError as e:
            missing.append(e)
    return MissingAssetError.combine(missing) if missing else None


class ModelStack:
    """The models one run (or one worker process) uses, each loaded once on first use and closed together.

    A component's module is imported when it is first asked for, so a text run never imports Whisper,
    Piper or torch, and ``workbench --help`` none of them.
    """

    def __init__(self, config: WorkbenchConfig | None = None) -> None:
        self.config = config or load_config()
        self._lock = threading.RLock()
        self._servers: dict[str, LocalLLMServer] = {}
        self._cache: dict[str, Any] = {}
        self._clients: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._sync_clients: dict[str, Any] = {}

    # -- LLM endpoints -------------------------------------------------------------
    def endpoint(self, name: str | None = None) -> ResolvedEndpoint:
        """Resolve an endpoint, starting the managed llama.cpp server for ``kind: local``."""
        key = name or "default"
        cfg = self.config.endpoint(name)
        if isinstance(cfg, LLMFactory):
            args = cfg.args
            return ResolvedEndpoint(key, cfg, str(args.get("base_url") or ""), str(args.get("model") or cfg.use))
        if cfg.kind == "openai":
            if not cfg.base_url or not cfg.model:
                raise ValueError(f"endpoint {key!r}: kind 'openai' needs base_url and model")
            return ResolvedEndpoint(key, cfg, cfg.base_url, cfg.model)
        with self._lock:
            server = self._servers.get(key)
            if server is None:
                server = self._loaded(lambda: LocalLLMServer(cfg, log_dir=self.config.state_dir / "logs"))
                self._servers[key] = server
            server.ensure_running()
        return ResolvedEndpoint(key, cfg, server.base_url, server.model_name, server)

    def http_client(self, endpoint: ResolvedEndpoint) -> Any:
        """One pooled OpenAI client per endpoint and event loop, shared by every LLM built on it.

        Keyed by the loop object (weakly) because pooled connections belong to the loop that opened them.
        """
        import asyncio

        try:
            loop: Any = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            per_loop = self._clients.setdefault(loop, {}) if loop is not None else self._sync_clients
            if endpoint.name not in per_loop:
                c = endpoint.config
                if isinstance(c, LLMFactory):
                    raise ConfigError(
                        f"{endpoint_field(endpoint.name)}: an OpenAI-compatible endpoint is needed here, and this one "
                        f"is a factory ({c.use}); give this use an endpoint of kind 'local' or 'openai'"
                    )
                per_loop[endpoint.name] = chat_client(
                    base_url=endpoint.base_url, api_key=c.api_key(), timeout_s=c.timeout_s, transport=c.transport
                )
            return per_loop[endpoint.name]

    def llm(self, name: str | None = None) -> llm.LLM:
        """The endpoint's LiveKit LLM, how every strategy reaches a model: ``livekit.plugins.openai.LLM`` on the
        pooled client, or what a factory endpoint builds (a new instance per call, like the OpenAI one)."""
        ep = self.endpoint(name)
        c = ep.config
        if isinstance(c, LLMFactory):
            return build_component(endpoint_field(ep.name), c)
        body: dict[str, Any] = {"seed": c.seed} if c.seed is not None else {}
        if c.kind == "local":  # llama.cpp's server ignores max_completion_tokens: without this, answers are unbounded
            body["max_tokens"] = c.max_tokens
        extra = {"extra_body": body} if body else {}
        return lk_openai.LLM(
            model=ep.model,
            client=self.http_client(ep),
            temperature=c.temperature,
            max_completion_tokens=c.max_tokens,
            **extra,
        )

    # -- speech and embeddings (loaded once, shared) -------------------------------
    def _loaded(self, factory: Callable[[], Any]) -> Any:
        """``factory()``; a missing model package fails naming every package this stack lacks, not only that one."""
        try:
            return factory()
        except MissingAssetError as e:
            also = missing_assets(self.config)
            raise MissingAssetError.combine([e, also] if also else [e]) from e

    def _once(self, key: str, factory: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._loaded(factory)
            return self._cache[key]

    def missing_assets(self) -> MissingAssetError | None:
        """Every model package this stack's config needs that is not installed (:func:`missing_assets`)."""
        return missing_assets(self.config)

    def check_components(self) -> None:
        """Every factory section of the config can be built as written (:func:`check_components`); builds nothing."""
        check_components(self.config)

    def stt(self) -> lk_stt.STT:
        cfg = self.config.stt
        if isinstance(cfg, Factory):
            return self._once(f"stt:{cfg.use}", lambda: build_component("stt", cfg))
        from workbench.models.stt import WhisperSTT

        return self._once(f"stt:{cfg.model}", lambda: WhisperSTT(cfg))

    def tts(self, kind: str | None = None) -> lk_tts.TTS:
        """The configured TTS; ``kind`` picks an embedded voice instead (``piper``, ``espeak``)."""
        cfg = self.config.tts
        if isinstance(cfg, Factory) and not kind:
            return self._once(f"tts:{cfg.use}", lambda: build_component("tts", cfg))
        from workbench.models.tts import build_tts

        base = cfg if isinstance(cfg, TTSConfig) else TTSConfig()
        embedded = base.model_copy(update={"kind": kind}) if kind else base
        return self._once(f"tts:{embedded.kind}", lambda: build_tts(embedded))

    def vad(self) -> lk_vad.VAD:
        cfg = self.config.vad
        if isinstance(cfg, Factory):
            return self._once(f"vad:{cfg.use}", lambda: build_component("vad", cfg))
        from workbench.models.speech import load_vad

        return self._once("vad", lambda: load_vad(cfg))

    def turn_detection(self) -> Any:
        detector = self.config.turn.detector
        if detector is not None:
            return build_component("turn.detector", detector)
        from workbench.models.speech import turn_detection

        return turn_detection(self.config.turn)

    def embedder(self) -> Any:
        from workbench.models.embeddings import MiniLMEmbedder

        return self._once("embedder", lambda: MiniLMEmbedder(self.config.embeddings))

    def close(self) -> None:
        """Stop managed servers; loaded models are released with the stack."""
        with self._lock:
            for server in self._servers.values():
                server.stop()
            self._servers.clear()
            self._cache.clear()

    def __enter__(self) -> ModelStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
