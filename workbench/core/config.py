"""Typed configuration: which LLM endpoint, STT, TTS, VAD and turn detection to use.

The embedded default needs no file. A YAML file (``--config`` or ``$WORKBENCH_CONFIG``)
overrides it, and environment variables ``WORKBENCH__SECTION__KEY=value`` override both,
so CI can switch one knob without writing a file. Secrets are never stored here: an
endpoint names the *environment variable* that holds its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

ENV_PREFIX = "WORKBENCH__"
DOTENV_FILE = ".env"  # in the working directory; git-ignored


def read_dotenv(path: str | Path = DOTENV_FILE) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (``export``, quotes and ``#`` comments allowed); {} when absent.

    Read where a key is needed, never copied into ``os.environ``: a ``.env`` holding the worker's LiveKit
    credentials must not switch an eval's end-of-turn detection to the cloud.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value[:1] in ("'", '"') and value.find(value[0], 1) > 0:
            value = value[1 : value.find(value[0], 1)]  # quoted: up to the closing quote (a comment may follow)
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            out[key] = value
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointConfig(_Model):
    """An OpenAI-compatible chat endpoint; ``local`` means a llama.cpp server we manage."""

    kind: Literal["local", "openai"] = "local"
    # local: GGUF alias ("smollm2", "qwen2.5-coder-0.5b") or a path
    gguf: str = "smollm2"
    n_ctx: int = 2048
    n_threads: int = 2
    # llama-cpp-python's chat format; None = the GGUF's own template. "chatml-function-calling" parses tool
    # calls (the GGUF templates render tools but the server returns the call as text)
    chat_format: str | None = None
    # openai: any OpenAI-compatible server (OpenAI, Ollama, vLLM, a remote llama.cpp)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    # request behaviour
    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 128
    context_tokens: int | None = None  # prompt budget for this endpoint; None = n_ctx - max_tokens
    timeout_s: float = 30.0
    # httpx: what livekit-plugins-openai uses; aiohttp: the OpenAI SDK's own aiohttp option (less CPU per request)
    transport: Literal["httpx", "aiohttp"] = "httpx"

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    def api_key(self) -> str:
        """The key, read from the environment at call time (never stored in configs or results)."""
        if self.kind == "local":
            return "local-no-key"
        if not self.api_key_env:
            return "no-key"
        key = os.environ.get(self.api_key_env) or read_dotenv().get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"environment variable {self.api_key_env} is not set, nor in ./{DOTENV_FILE} "
                f"(API key for {self.base_url})"
            )
        return key

    def prompt_budget(self) -> int:
        return self.context_tokens or max(256, self.n_ctx - self.max_tokens)


class Factory(BaseModel):
    """A component built by any factory, by import path: ``use: "livekit.plugins.deepgram:STT"`` calls that class
    (or function) with the section's other keys as keyword arguments, plus ``api_key=<value of $api_key_env>``
    when ``api_key_env`` names a variable, so the key itself never appears in a config, a manifest or a report."""

    model_config = ConfigDict(extra="allow")

    use: str
    api_key_env: str | None = None

    @field_validator("use")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if v.count(":") != 1 or not all(v.split(":")):
            raise ValueError(f"{v!r}: give the factory as 'module:name', e.g. 'livekit.plugins.deepgram:STT'")
        return v

    @property
    def args(self) -> dict[str, Any]:
        """The factory's keyword arguments as written (the key is added when the factory is called)."""
        return dict(self.model_extra or {})

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key from ``$api_key_env`` (or ``./.env``); None when no variable is named or it is empty."""
        if not self.api_key_env:
            return None
        env = os.environ if environ is None else environ
        return env.get(self.api_key_env) or read_dotenv().get(self.api_key_env) or None


class LLMFactory(Factory):
    """An LLM endpoint built by any factory returning a ``livekit.agents.llm.LLM``, e.g.
    ``llm: {use: "livekit.plugins.anthropic:LLM", model: claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY}``.

    The strategies that send through LiveKit's LLM (plain, rag, the wrappers) use it as they use an
    OpenAI-compatible endpoint; the agent frameworks (AutoGen, AG2) and the LLM judge speak the OpenAI API
    themselves and refuse it. ``timeout_s`` and ``context_tokens`` are the workbench's, not the factory's.
    """

    timeout_s: float = 30.0
    context_tokens: int | None = None  # prompt budget for history; None = 4096

    @property
    def kind(self) -> Literal["factory"]:
        return "factory"

    def prompt_budget(self) -> int:
        return self.context_tokens or 4096


def _section(v: Any) -> str:
    return "factory" if isinstance(v, Factory) or (isinstance(v, Mapping) and "use" in v) else "embedded"


class STTConfig(_Model):
    kind: Literal["whisper"] = "whisper"
    model: Literal["tiny.en", "base"] = "tiny.en"
    language: str = "en"
    beam_size: int = 1
    compute_type: str = "int8"
    threads: int = 2


class TTSConfig(_Model):
    kind: Literal["piper", "espeak"] = "piper"
    deterministic: bool = True  # noise off: bit-identical audio for reproducible runs
    espeak_voice: str = "en-us"
    speed: float = 1.0


class VADConfig(_Model):
    min_speech_duration: float = 0.05
    # 0.25 s: with the transcript gate, the end of turn comes after this plus Whisper's time (~0.4 s), which also
    # carries callers over mid-turn pauses of up to 0.6 s (benchmarks/end_of_turn.py, docs/latency.md); the
    # floor LiveKit's streaming turn detectors accept
    min_silence_duration: float = 0.25
    activation_threshold: float = 0.5


# a section with `use:` is a Factory, else the embedded component's own fields (where a typo stays an error)
STTSection = Annotated[
    Annotated[Factory, Tag("factory")] | Annotated[STTConfig, Tag("embedded")], Discriminator(_section)
]
TTSSection = Annotated[
    Annotated[Factory, Tag("factory")] | Annotated[TTSConfig, Tag("embedded")], Discriminator(_section)
]
EndpointSection = Annotated[
    Annotated[LLMFactory, Tag("factory")] | Annotated[EndpointConfig, Tag("embedded")], Discriminator(_section)
]
VADSection = Annotated[
    Annotated[Factory, Tag("factory")] | Annotated[VADConfig, Tag("embedded")], Discriminator(_section)
]


class TurnConfig(_Model):
    """End of turn: ``vad`` (silence after speech, reproducible), LiveKit's local ``turn_detector``, or a
    ``detector`` factory returning what ``AgentSession(turn_detection=...)`` takes. The delays apply to all."""

    mode: Literal["vad", "turn_detector"] = "vad"
    detector: Factory | None = None  # when given, used instead of `mode`
    min_endpointing_delay: float = 0.25  # after the last speech; a batch STT's transcript usually comes later
    max_endpointing_delay: float = 3.0
    # LiveKit's preemptive generation: the reply starts on the final transcript, before the end-of-turn decision,
    # and plays once the turn ends (dropped if the caller goes on); `preemptive_tts` synthesises it early too
    preemptive_generation: bool = False
    preemptive_tts: bool = False
    # mode vad over a batch STT: do not end the turn while a segment of the caller's speech is still being
    # transcribed (else a mid-turn pause splits the turn in two; workbench.models.speech.TranscriptGate)
    wait_for_transcript: bool = True
    # over a batch STT: transcribe a segment once the caller has been silent this long, before the VAD ends it
    # (the STT's time overlaps the VAD's silence; dropped if they go on). None (default): when the VAD ends it,
    # LiveKit's StreamAdapter. Off by default: the later transcript is what carries paused callers over (with the
    # transcript gate the decision waits for it); docs/latency.md. workbench.models.speech.EarlyTranscripts
    early_transcript_s: float | None = Field(None, ge=0)
    # barge-in (LiveKit's turn_handling["interruption"], detection pinned to VAD: the adaptive model is a download)
    allow_interruptions: bool = True
    min_interruption_duration: float = Field(0.5, ge=0)  # seconds of caller speech before the agent yields
    min_interruption_words: int = Field(0, ge=0)  # transcribed words needed too (0: speech alone is enough)
    false_interruption_timeout: float | None = Field(2.0, gt=0)  # silence after which a yield counts as false
    resume_false_interruption: bool = True  # resume after a false one (needs an output that can pause)


class EmbeddingsConfig(_Model):
    kind: Literal["minilm"] = "minilm"
    batch_size: int = 32
    # MiniLM's Linear weights: fp16 gives fp32's vectors to 4 decimals, faster; int8 is faster still but lossy
    precision: Literal["fp32", "fp16", "int8"] = "fp16"


class WorkbenchConfig(_Model):
    llm: EndpointSection = Field(default_factory=EndpointConfig)
    endpoints: dict[str, EndpointSection] = Field(default_factory=dict)
    stt: STTSection = Field(default_factory=STTConfig)
    tts: TTSSection = Field(default_factory=TTSConfig)
    vad: VADSection = Field(default_factory=VADConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    state_dir: Path = Field(Path(".workbench"), validate_default=True)  # server logs, indexes, caches
    runs_dir: Path = Field(Path("runs"), validate_default=True)  # run folders ($WORKBENCH_RUNS_DIR overrides it)

    @field_validator("state_dir", "runs_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        """Resolved against the working directory when the config is loaded, not at each use, so a later
        ``os.chdir`` (a notebook's) does not move them; manifests leave both out (they are this machine's)."""
        return v.absolute()

    def endpoint(self, name: str | None = None) -> EndpointConfig | LLMFactory:
        """The named endpoint; ``None`` or ``"default"`` is ``llm``."""
        if name in (None, "default"):
            return self.llm
        if name not in self.endpoints:
            raise KeyError(f"unknown endpoint {name!r}; configured: default, {', '.join(self.endpoints)}")
        return self.endpoints[name]


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    if not all(keys):
        raise ValueError(f"{'__'.join(keys)!r}: empty section name")
    for k in keys[:-1]:
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise ValueError(f"{'__'.join(keys)!r}: {k!r} is set both as a value and as a section")
    data[keys[-1]] = value


def _env_value(raw: str) -> Any:
    """YAML when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return yaml.safe_load(raw) if raw else raw
    except yaml.YAMLError:
        return raw


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``WORKBENCH__LLM__BASE_URL=...`` becomes ``{"llm": {"base_url": ...}}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for key, raw in (environ if environ is not None else os.environ).items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
            _set_path(out, path, _env_value(raw))
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> WorkbenchConfig:
    """Defaults < YAML file < environment. No file needed for the embedded default."""
    env = environ if environ is not None else dict(os.environ)
    path = path or env.get("WORKBENCH_CONFIG")
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{p}: cannot read config: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a config must be a mapping, got {type(loaded).__name__}")
        data = loaded
    try:
        data = _deep_merge(data, env_overrides(env))
    except ValueError as e:
        raise ConfigError(f"environment WORKBENCH__ variables: {e}") from e
    try:
        return WorkbenchConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path or 'environment'}: {validation_text(e)}") from e
    except ValueError as e:
        raise ConfigError(f"{path or 'environment'}: {e}") from e


def validation_text(e: ValidationError) -> str:
    """Pydantic's errors on one line, each as ``field.path: message`` (without the union's tag names)."""
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("factory", "embedded"))
        out.append(f"{loc}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(out)
