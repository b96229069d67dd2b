"""Datasets of scripted calls: ``knowledge/`` + ``conversations.jsonl`` + ``audio/`` (see datasets/README.md).

Loading never stops at the first bad line: every malformed line becomes a :class:`DatasetProblem`
(file, line, field, message) and the good conversations still load, so one typo costs one
conversation, not the run. Paths in a dataset are relative to its folder and may never leave it
(no ``..``, no absolute paths, no symlinks): a dataset from someone else cannot read your files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from workbench.replay.audio import AudioLoadError, verify_audio

CONVERSATIONS_FILE = "conversations.jsonl"
KNOWLEDGE_DIR = "knowledge"
AUDIO_DIR = "audio"
DEFAULT_VARIANT = "default"
"""Variant name of a turn whose ``audio`` is a plain path rather than a mapping."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_NAME_RE = re.compile(_NAME)
_META_TOLERANCE_S = 0.05
_TOOL = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"  # an OpenAI-style function name


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset; ``line`` is 1-based, ``field`` a path like ``turns[0].audio.piper``."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        return f"{where} {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class DatasetError(ValueError):
    """The dataset cannot be used as asked; ``problems`` lists why."""

    def __init__(self, message: str, problems: list[DatasetProblem] | None = None) -> None:
        self.problems = problems or []
        detail = "".join(f"\n  {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(message + detail + more)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SpeechSpan(_Strict):
    """Where the speech is inside one audio file (seconds): the harness times end of speech from it."""

    speech_start_s: float = Field(ge=0)
    speech_end_s: float = Field(gt=0)
    duration_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SpeechSpan:
        if self.speech_end_s <= self.speech_start_s:
            raise ValueError("speech_end_s must be after speech_start_s")
        if self.duration_s is not None and self.speech_end_s > self.duration_s + _META_TOLERANCE_S:
            raise ValueError("speech_end_s is past the end of the file (duration_s)")
        return self


class ExpectedToolCall(_Strict):
    """A tool call a turn should make: its name and the arguments that must match.

    ``match``: ``subset`` (default) passes when every argument listed here was given with this value
    (others may be there too); ``exact`` when the call's arguments are exactly these.
    """

    name: str = Field(pattern=_TOOL)
    args: dict[str, Any] = Field(default_factory=dict)
    match: Literal["subset", "exact"] = "subset"


class DatasetTurn(_Strict):
    """One user turn: what the caller says, how it sounds, and what a good answer contains."""

    user: str = Field(min_length=1)
    audio: str | dict[str, str] | None = None
    audio_meta: dict[str, SpeechSpan] = Field(default_factory=dict)
    reference: str = ""
    contexts: list[str] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list)
    expect_tools: list[ExpectedToolCall] | None = None  # None: no expectation; []: no tool may be called
    tool_results: dict[Annotated[str, Field(pattern=_TOOL)], Any] = Field(default_factory=dict)
    """Tool name -> what that tool returns in this turn instead of running (a tool not listed runs for real)."""
    barge_in_s: float | None = Field(default=None, gt=0)
    """Voice: this turn's audio starts this long into the agent's previous reply, played over it (barge-in)."""
    expect_yield: bool = True
    """Barge-in turns: False marks noise or a backchannel the agent should talk through (a yield is false)."""

    @field_validator("user")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("user text is blank")
        return v

    @field_validator("audio", mode="before")
    @classmethod
    def _audio_shape(cls, v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if not isinstance(v, dict):
            raise ValueError("audio must be a path (string) or a mapping of variant name to path")
        if not v:
            raise ValueError("audio mapping is empty")
        for name, path in v.items():
            if not _NAME_RE.match(name):
                raise ValueError(f"audio variant name {name!r} must match {_NAME}")
            if not isinstance(path, str):
                raise ValueError(f"audio variant {name!r}: path must be a string")
        return v

    @field_validator("tool_results")
    @classmethod
    def _results_not_null(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            if value is None:
                raise ValueError(f"{name}: null is not a result (give a string or a JSON value)")
        return v

    @model_validator(mode="after")
    def _meta_matches_audio(self) -> DatasetTurn:
        unknown = set(self.audio_meta) - set(self.audio_variants())
        if unknown:
            raise ValueError(f"audio_meta has variants with no audio: {', '.join(sorted(unknown))}")
        return self

    @model_validator(mode="after")
    def _yield_needs_barge_in(self) -> DatasetTurn:
        if not self.expect_yield and self.barge_in_s is None:
            raise ValueError("expect_yield: false needs barge_in_s (only a turn played over the agent can yield)")
        return self

    def audio_variants(self) -> dict[str, str]:
        """Variant name -> path; a plain ``audio`` path is the variant ``default``."""
        if self.audio is None:
            return {}
        return {DEFAULT_VARIANT: self.audio} if isinstance(self.audio, str) else dict(self.audio)

    def speech_span(self, variant: str = DEFAULT_VARIANT) -> SpeechSpan | None:
        return self.audio_meta.get(variant)


class Conversation(_Strict):
    """A scripted call: its turns are played in order, the history carries over."""

    id: str = Field(pattern=_NAME)
    tags: list[str] = Field(default_factory=list)
    turns: list[DatasetTurn] = Field(min_length=1)
    _line: int | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _first_turn_cannot_barge_in(self) -> Conversation:
        if self.turns and self.turns[0].barge_in_s is not None:
            raise ValueError("turns[0].barge_in_s: the first turn has no agent reply to talk over")
        return self

    @property
    def line(self) -> int | None:
        """Line in conversations.jsonl this came from (None when built in code)."""
        return self._line

    def variants(self) -> set[str]:
        """Voices every turn has a recording for: only those can replay the whole call."""
        sets = [set(t.audio_variants()) for t in self.turns]
        return set.intersection(*sets) if sets else set()

    def to_json_line(self) -> str:
        data = self.model_dump(exclude_defaults=True)
        data = {"id": self.id, "tags": self.tags, **{k: v for k, v in data.items() if k not in ("id", "tags")}}
        return json.dumps(data, ensure_ascii=False)


@dataclass
class Dataset:
    root: Path
    conversations: list[Conversation]
    problems: list[DatasetProblem] = field(default_factory=list)

    @property
    def knowledge_dir(self) -> Path:
        return self.root / KNOWLEDGE_DIR

    @property
    def conversations_file(self) -> Path:
        return self.root / CONVERSATIONS_FILE

    def get(self, conversation_id: str) -> Conversation:
        for c in self.conversations:
            if c.id == conversation_id:
                return c
        raise KeyError(conversation_id)

    def variants(self) -> set[str]:
        """Every audio variant named anywhere in the dataset."""
        return {v for c in self.conversations for t in c.turns for v in t.audio_variants()}

    def resolve(self, relative: str) -> Path:
        """A dataset path as a real file inside the dataset, or DatasetError (traversal, symlink, missing)."""
        problem = path_problem(relative) or file_problem(self.root, relative)
        if problem:
            raise DatasetError(f"{self.root}: {relative!r}: {problem}")
        return self.root / relative

    def audio_path(self, turn: DatasetTurn, variant: str = DEFAULT_VARIANT) -> Path:
        variants = turn.audio_variants()
        if variant not in variants:
            raise DatasetError(f"no {variant!r} audio for turn {turn.user[:40]!r} (has: {sorted(variants)})")
        return self.resolve(variants[variant])

    def raise_on_problems(self) -> Dataset:
        if self.problems:
            raise DatasetError(f"{self.root}: {len(self.problems)} problem(s) in the dataset", self.problems)
        return self


# -- paths ---------------------------------------------------------------------------------
def path_problem(relative: str) -> str | None:
    """Lexical check of a dataset path: why it is refused, or None."""
    if not relative:
        return "empty path"
    if "\x00" in relative:
        return "path contains a NUL character"
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "path contains invalid Unicode"
    if "\\" in relative:
        return "use '/' as the path separator (backslashes are refused)"
    pure = PurePosixPath(relative)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", relative):
        return "absolute paths are not allowed: use a path relative to the dataset folder"
    if ".." in pure.parts:
        return "path leaves the dataset folder ('..' is not allowed)"
    return None


def file_problem(root: Path, relative: str) -> str | None:
    """Filesystem check of a lexically safe path: no symlink anywhere, stays inside, is a file."""
    current = root
    for part in PurePosixPath(relative).parts:
        current = current / part
        if current.is_symlink():
            return f"symlinks are not allowed ({current.relative_to(root).as_posix()} is one)"
    try:
        inside = current.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as e:
        return f"cannot resolve path: {e}"
    if not inside:
        return "path leaves the dataset folder"
    if not current.exists():
        return "file not found"
    if not current.is_file():
        return "not a regular file"
    return None


# -- loading -------------------------------------------------------------------------------
def _field_name(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key itself is already in the path
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        return "unknown field"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def _lexical_problems(conv: Conversation) -> list[tuple[str, str]]:
    found = []
    for i, turn in enumerate(conv.turns):
        for name, rel in turn.audio_variants().items():
            key = f"turns[{i}].audio" + ("" if isinstance(turn.audio, str) else f".{name}")
            if problem := path_problem(rel):
                found.append((key, problem))
        for j, rel in enumerate(turn.contexts):
            if problem := path_problem(rel):
                found.append((f"turns[{i}].contexts[{j}]", problem))
    return found


def parse_conversations(data: bytes, file: str = CONVERSATIONS_FILE) -> tuple[list[Conversation], list[DatasetProblem]]:
    """Parse JSONL bytes; never raises on content: bad lines become problems, good ones load."""
    conversations: list[Conversation] = []
    problems: list[DatasetProblem] = []
    seen: dict[str, int] = {}
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue

        def bad(message: str, fld: str | None = None, _line: int = lineno) -> None:
            problems.append(DatasetProblem(file, _line, fld, message))

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad(f"not valid UTF-8 (byte {e.start})")
            continue
        try:
            obj = json.loads(text)
            json.dumps(obj, ensure_ascii=False).encode("utf-8")  # lone surrogates from "\ud800" escapes
        except json.JSONDecodeError as e:
            bad(f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        except UnicodeEncodeError:
            bad("invalid Unicode escape (lone surrogate) in a string")
            continue
        except RecursionError:
            bad("invalid JSON: nested too deeply")
            continue
        except ValueError as e:  # e.g. an integer with more digits than Python converts
            bad(f"invalid JSON: {e}")
            continue
        if not isinstance(obj, dict):
            bad(f"expected a JSON object (one conversation), got {type(obj).__name__}")
            continue
        try:
            conv = Conversation.model_validate(obj)
        except ValidationError as e:
            for err in e.errors():
                bad(_message(err), _field_name(err["loc"]))
            continue
        except RecursionError:
            bad("nested too deeply")
            continue
        lexical = _lexical_problems(conv)
        for fld, message in lexical:
            bad(message, fld)
        if conv.id in seen:
            bad(f"duplicate id {conv.id!r} (first on line {seen[conv.id]})", "id")
            continue
        seen[conv.id] = lineno
        if lexical:
            continue
        conv._line = lineno
        conversations.append(conv)
    return conversations, problems


def load_dataset(path: str | Path, *, strict: bool = False) -> Dataset:
    """Load a dataset folder; malformed lines are skipped and listed in ``Dataset.problems``.

    ``strict`` raises :class:`DatasetError` when there is any problem. A missing folder or
    conversations file always raises: there is nothing to load.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    file = root / CONVERSATIONS_FILE
    if file.is_symlink() or not file.is_file():
        raise DatasetError(f"{root}: no {CONVERSATIONS_FILE} (or it is a symlink)")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise DatasetError(f"{file}: cannot read: {e}") from e
    conversations, problems = parse_conversations(data)
    ds = Dataset(root, conversations, problems)
    return ds.raise_on_problems() if strict else ds


def validate_dataset(path: str | Path, *, check_audio: bool = True) -> list[DatasetProblem]:
    """Every problem in a dataset: structure, ids, paths, missing/unsafe files, unusable audio.

    ``check_audio`` also decodes every audio file once, at its own rate (what replay would refuse:
    corrupt, truncated, NaN/infinite samples, absurd header), and compares its length with
    ``audio_meta``. Each problem names the JSONL line and the field, e.g. ``turns[1].audio.piper``.
    """

    root = Path(path)
    try:
        ds = load_dataset(root)
    except DatasetError as e:
        return [DatasetProblem(str(root), None, None, str(e).removeprefix(f"{root}: "))]
    problems = list(ds.problems)
    for conv in ds.conversations:

        def bad(fld: str, message: str, _line: int | None = conv.line) -> None:
            problems.append(DatasetProblem(CONVERSATIONS_FILE, _line, fld, message))

        for i, turn in enumerate(conv.turns):
            for j, rel in enumerate(turn.contexts):
                if problem := file_problem(root, rel):
                    bad(f"turns[{i}].contexts[{j}]", f"{rel}: {problem}")
            for name, rel in turn.audio_variants().items():
                fld = f"turns[{i}].audio" + ("" if isinstance(turn.audio, str) else f".{name}")
                if problem := file_problem(root, rel):
                    bad(fld, f"{rel}: {problem}")
                    continue
                if not check_audio:
                    continue
                try:
                    info = verify_audio(root / rel)
                except AudioLoadError as e:
                    bad(fld, f"{rel}: {e.reason}")
                    continue
                span = turn.speech_span(name)
                if span and span.duration_s and not math.isclose(span.duration_s, info.duration_s, abs_tol=0.05):
                    bad(
                        f"turns[{i}].audio_meta.{name}.duration_s",
                        f"says {span.duration_s:.3f} s, the file is {info.duration_s:.3f} s",
                    )
    knowledge = root / KNOWLEDGE_DIR
    if knowledge.is_symlink():
        problems.append(DatasetProblem(KNOWLEDGE_DIR, None, None, "symlinks are not allowed"))
    elif knowledge.is_dir():
        for p in sorted(knowledge.rglob("*")):
            if p.is_symlink():
                rel = p.relative_to(root).as_posix()
                problems.append(DatasetProblem(rel, None, None, "symlinks are not allowed in knowledge/"))
    return problems
