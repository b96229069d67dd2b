"""Judge-model scorers: ragas LLM metrics and LiveKit's ``JudgeGroup`` judges, with a disk cache.

Any OpenAI-compatible endpoint from the workbench config can judge (``--judge-endpoint NAME``).
Every chat request goes through :class:`CachingTransport`, under the HTTP client that both ragas
(instructor) and LiveKit's OpenAI plugin use: the key is a SHA-256 of the request body (model,
messages, tools, sampling parameters), the value the response bytes. Re-scoring a run, or scoring
the same answers in another run, costs no judge calls; a changed prompt or model is a new key.
Only successful (HTTP 200) responses are stored, so a failed call is retried next time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pandas as pd

from workbench.core.cells import as_list, as_text
from workbench.core.config import ConfigError, LLMFactory, load_config
from workbench.core.io import atomic_write_json
from workbench.core.metrics import METRICS, Metric
from workbench.models import ModelStack
from workbench.scoring.base import ScoreContext, Scorer, available_scorers, run_sync, scorer
from workbench.scoring.offline import ragas_metrics

if TYPE_CHECKING:
    from workbench.models import ModelStack

log = logging.getLogger(__name__)
NAN = float("nan")
CACHED_PATHS = ("/chat/completions",)


class JudgeCache:
    """Response bytes on disk by request hash; counts hits and misses (thread-safe)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(body: bytes) -> str:
        """SHA-256 of the canonical JSON body (the model name and the whole prompt are inside it)."""
        try:
            canon = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except ValueError:
            canon = body
        return hashlib.sha256(canon).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        try:
            entry = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return entry

    def put(self, key: str, request: dict[str, Any] | None, content_type: str, body: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        entry = {"content_type": content_type, "body": body.decode("utf-8", "replace"), "request": request}
        atomic_write_json(p, entry, indent=None)


class CachingTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that answers repeated chat-completion requests from :class:`JudgeCache`."""

    def __init__(self, cache: JudgeCache, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self.cache = cache
        self.inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST" or not request.url.path.endswith(CACHED_PATHS):
            return await self.inner.handle_async_request(request)
        body = await request.aread()
        key = self.cache.key(body)
        hit = self.cache.get(key)
        if hit is not None:
            return httpx2.Response(
                200, headers={"content-type": hit["content_type"]}, content=hit["body"].encode(), request=request
            )
        response = await self.inner.handle_async_request(request)
        content = await response.aread()  # whole body (SSE streams included): the judge is not latency-bound
        await response.aclose()
        ctype = response.headers.get("content-type", "application/json")
        if response.status_code == 200:
            try:
                req = json.loads(body)
            except ValueError:
                req = None
            self.cache.put(key, req, ctype, content)
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return httpx2.Response(response.status_code, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class JudgeLLM:
    """A judge model on an OpenAI-compatible endpoint, with its request cache.

    Build it from a config endpoint name (:meth:`from_endpoint`) or directly from a base URL.
    Clients are made per event loop (:meth:`client`), as pooled connections belong to one loop.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "no-key",
        cache_dir: str | Path = Path(".workbench") / "judge-cache",
        name: str = "judge",
        timeout_s: float = 120.0,
        max_tokens: int = 512,
        concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.concurrency = max(1, concurrency)
        self.cache = JudgeCache(cache_dir)
        self._api_key = api_key  # never written anywhere: describe() leaves it out
        self._stack: ModelStack | None = None

    @classmethod
    def from_endpoint(
        cls, name: str, *, stack: ModelStack | None = None, config_path: str | Path | None = None
    ) -> JudgeLLM:
        """The endpoint ``name`` from the workbench config (a ``local`` one gets its server started)."""

        own = stack is None
        stack = stack or ModelStack(load_config(config_path))
        try:
            ep = stack.endpoint(name)
            if isinstance(ep.config, LLMFactory):
                raise ConfigError(
                    f"judge endpoint {name!r} is a factory ({ep.config.use}): the judge sends OpenAI API requests, "
                    "so give it an endpoint of kind 'local' or 'openai'"
                )
            judge = cls(
                base_url=ep.base_url,
                model=ep.model,
                api_key=ep.config.api_key(),
                cache_dir=stack.config.state_dir / "judge-cache",
                name=name,
                timeout_s=max(ep.config.timeout_s, 120.0),  # judge prompts are long; nobody waits on them live
                # a managed llama.cpp server answers one request at a time: queueing more only trips timeouts
                concurrency=1 if ep.config.kind == "local" else 4,
            )
        except BaseException:
            if own:
                stack.close()
            raise
        if own:
            judge._stack = stack
        return judge

    def client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            max_retries=2,
            http_client=httpx2.AsyncClient(
                transport=CachingTransport(self.cache), timeout=httpx2.Timeout(self.timeout_s, connect=10.0)
            ),
        )

    def describe(self) -> dict[str, Any]:
        """For the score record: which model judged, and how much the cache saved (no key, ever)."""
        return {
            "endpoint": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "cache_dir": str(self.cache.directory),
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
        }

    def close(self) -> None:
        """Stop the local server this judge started (if it started one)."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def _ragas_embeddings(embedder: Any) -> Any:
    """MiniLM as a ragas embedding (ragas' ``AnswerRelevancy`` compares questions by embedding)."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class MiniLMRagasEmbedding(BaseRagasEmbedding):
        def __init__(self) -> None:
            super().__init__()
            self._e = embedder

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self._e.embed([text])[0].tolist()

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self._e.embed(list(texts)).tolist()

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self.embed_texts(texts)

    return MiniLMRagasEmbedding()


def short_error(e: BaseException | str) -> str:
    """One line of an error (instructor wraps attempts in multi-line XML): the first line that says something."""
    text = str(e) if not isinstance(e, str) else e
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("<")]
    msg = lines[0] if lines else text.strip()
    prefix = f"{type(e).__name__}: " if isinstance(e, BaseException) else ""
    return (prefix + msg)[:160]


def _errors_note(errors: dict[str, list[str]]) -> str | None:
    parts = [f"{col}: {len(msgs)} row(s) failed (first: {msgs[0]})" for col, msgs in errors.items() if msgs]
    return "; ".join(parts) or None


class _JudgeFailures(logging.Handler):
    """Collects the warnings JudgeGroup logs when a judge raises (it drops the judgment and carries on)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Judge '"):
            self.messages.append(short_error(msg))


@scorer("ragas_llm")
class RagasJudgeScorer(Scorer):
    """ragas' LLM metrics: faithfulness to the retrieved passages, answer relevancy, context precision."""

    metrics = (  # in the order run() returns them
        Metric("faithfulness", "faithfulness", "", "higher", "share of the answer's claims the passages support"),
        Metric("answer_relevancy", "answer relevancy", "", "higher", "how well the answer addresses the question"),
        Metric("llm_context_precision", "context precision (judge)", "", "higher", "useful passages ranked first"),
    )
    needs_judge = True
    description = (
        "ragas Faithfulness (answer vs retrieved passages), AnswerRelevancy (judge questions + MiniLM), "
        "ContextPrecisionWithReference; NaN where a metric does not apply (no passages, no answer)"
    )

    def __init__(self) -> None:
        self.note: str | None = None

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:

        ragas_metrics()
        from ragas.llms.base import llm_factory
        from ragas.metrics.collections import AnswerRelevancy, ContextPrecisionWithReference, Faithfulness

        judge = ctx.judge
        assert judge is not None
        embeddings = _ragas_embeddings(ctx.embedder())
        rows = [
            (as_text(u), as_text(a), as_text(r), [str(c) for c in as_list(cs)])
            for u, a, r, cs in zip(df["user_text"], df["answer"], df["reference"], df["contexts"], strict=True)
        ]
        errors: dict[str, list[str]] = {c: [] for c in self.columns}

        async def run() -> dict[str, list[float]]:
            client = judge.client()
            try:
                llm = llm_factory(judge.model, client=client, temperature=0.0, max_tokens=judge.max_tokens)
                faith = Faithfulness(llm=llm)
                relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=1)
                precision = ContextPrecisionWithReference(llm=llm)
                sem = asyncio.Semaphore(judge.concurrency)

                async def one(col: str, coro_fn: Any) -> float:
                    async with sem:
                        try:
                            return float((await coro_fn()).value)
                        except Exception as e:  # the judge's reply did not parse, a timeout, ...
                            errors[col].append(short_error(e))
                            return NAN

                async def row(user: str, answer: str, ref: str, contexts: list[str]) -> tuple[float, float, float]:
                    async def nan() -> float:
                        return NAN

                    def faithfulness() -> Any:
                        return faith.ascore(user_input=user, response=answer, retrieved_contexts=contexts)

                    def context_precision() -> Any:
                        return precision.ascore(user_input=user, reference=ref, retrieved_contexts=contexts)

                    f = one("faithfulness", faithfulness) if contexts and answer.strip() and user.strip() else nan()
                    r = (
                        one("answer_relevancy", lambda: relevancy.ascore(user_input=user, response=answer))
                        if answer.strip() and user.strip()
                        else nan()
                    )
                    p = (
                        one("llm_context_precision", context_precision)
                        if contexts and ref.strip() and user.strip()
                        else nan()
                    )
                    return tuple(await asyncio.gather(f, r, p))  # type: ignore[return-value]

                results = await asyncio.gather(*(row(*r) for r in rows))
            finally:
                await client.close()
            return {c: [res[i] for res in results] for i, c in enumerate(self.columns)}

        # instructor logs every exhausted retry at ERROR; each one is counted in the note instead
        quiet = logging.getLogger("instructor")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            values = run_sync(run)
        finally:
            quiet.setLevel(level)
        out = pd.DataFrame(values, index=df.index, dtype="float64")
        self.note = _errors_note(errors)
        self.failed_columns = {c for c, msgs in errors.items() if msgs}
        return out


LK_JUDGES = {
    "accuracy": "the answer agrees with the passages and the reference",
    "relevancy": "the answer addresses what the caller asked",
    "conciseness": "short enough to be spoken",
}
_VERDICT_SCORE = {"pass": 1.0, "maybe": 0.5, "fail": 0.0}


def _chat_contexts(df: pd.DataFrame) -> list[tuple[Any, Any]]:
    """Per row: the conversation so far (with retrieved passages as a tool result) and a reference reply."""
    from livekit.agents.llm import ChatContext, FunctionCall, FunctionCallOutput

    key_cols = ["strategy", "mode", "voice", "conversation_id", "repetition"]
    history: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    order = df.sort_values([*key_cols, "turn_index"], kind="stable").index
    prior: dict[Any, list[tuple[str, str]]] = {}
    for idx in order:
        r = df.loc[idx]
        k = tuple(r[c] for c in key_cols)
        prior[idx] = list(history.get(k, []))
        history.setdefault(k, []).append((as_text(r["user_text"]), as_text(r["answer"])))
    out = []
    for idx in df.index:
        r = df.loc[idx]
        ctx = ChatContext.empty()
        for user, answer in prior[idx]:
            ctx.add_message(role="user", content=user)
            ctx.add_message(role="assistant", content=answer)
        ctx.add_message(role="user", content=as_text(r["user_text"]))
        passages = [str(c) for c in as_list(r["contexts"])]
        if passages:
            call_id = f"retrieval_{r['turn_index']}"
            ctx.items.append(
                FunctionCall(
                    call_id=call_id, name="search_knowledge", arguments=json.dumps({"query": as_text(r["user_text"])})
                )
            )
            ctx.items.append(
                FunctionCallOutput(
                    call_id=call_id, name="search_knowledge", output="\n\n".join(passages), is_error=False
                )
            )
        ctx.add_message(role="assistant", content=as_text(r["answer"]))
        ref = None
        if as_text(r["reference"]).strip():
            ref = ChatContext.empty()
            ref.add_message(role="user", content=as_text(r["user_text"]))
            ref.add_message(role="assistant", content=as_text(r["reference"]))
        out.append((ctx, ref))
    return out


@scorer("livekit_judges")
class LiveKitJudgeScorer(Scorer):
    """LiveKit's built-in judges (``livekit.agents.evals``): accuracy, relevancy, conciseness (pass 1, maybe 0.5)."""

    metrics = (
        *(
            Metric(f"lk_{j}", f"LiveKit {j}", "", "higher", f"{why}: pass 1, maybe 0.5, fail 0")
            for j, why in LK_JUDGES.items()
        ),
        Metric("lk_judge_reasons", "LiveKit judges' reasons", "", None, "JSON: each judge's verdict and reasoning"),
    )
    needs_judge = True
    description = (
        "livekit.agents.evals.JudgeGroup with accuracy_judge (vs the retrieved passages and the reference answer), "
        "relevancy_judge, conciseness_judge on the conversation up to the turn; pass=1, maybe=0.5, fail=0"
    )

    def __init__(self) -> None:
        self.note: str | None = None

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        from livekit.agents.evals import JudgeGroup, accuracy_judge, conciseness_judge, relevancy_judge
        from livekit.plugins import openai as lk_openai

        judge = ctx.judge
        assert judge is not None
        convs = _chat_contexts(df)
        failures: list[str] = []

        async def run() -> list[dict[str, Any]]:
            client = judge.client()
            try:
                lk_llm = lk_openai.LLM(model=judge.model, client=client, temperature=0.0)
                group = JudgeGroup(llm=lk_llm, judges=[accuracy_judge(), relevancy_judge(), conciseness_judge()])
                sem = asyncio.Semaphore(judge.concurrency)

                async def one(chat: Any, ref: Any) -> dict[str, Any]:
                    async with sem:
                        res = await group.evaluate(chat, reference=ref)
                    row: dict[str, Any] = {}
                    reasons = {}
                    for name in LK_JUDGES:
                        j = res.judgments.get(name)
                        if j is None:  # JudgeGroup logs and drops a judge that raised
                            failures.append(name)
                            row[f"lk_{name}"] = NAN
                        else:
                            row[f"lk_{name}"] = _VERDICT_SCORE.get(j.verdict, NAN)
                            reasons[name] = {"verdict": j.verdict, "reasoning": j.reasoning}
                    row["lk_judge_reasons"] = json.dumps(reasons) if reasons else None
                    return row

                return list(await asyncio.gather(*(one(c, r) for c, r in convs)))
            finally:
                await client.close()

        lk_log = logging.getLogger("livekit.agents")
        catcher = _JudgeFailures()
        lk_log.addHandler(catcher)
        try:
            rows = run_sync(run)
        finally:
            lk_log.removeHandler(catcher)
        out = pd.DataFrame(rows, index=df.index, columns=list(self.columns))
        for name in LK_JUDGES:
            out[f"lk_{name}"] = out[f"lk_{name}"].astype("float64")
        if failures:
            self.failed_columns = {f"lk_{n}" for n in failures} | {"lk_judge_reasons"}
            counts = pd.Series(failures).value_counts()
            first = f" (first: {catcher.messages[0]})" if catcher.messages else ""
            self.note = "judge calls failed (NaN): " + ", ".join(f"{k} x{v}" for k, v in counts.items()) + first
        return out


def judged_columns() -> list[str]:
    """Every score a judge adds (what the report lists as absent without a judge), user judge scorers' included.

    Columns declared without a direction (the judges' reasons) are not scores and are left out.
    """
    return [
        c
        for cls in available_scorers().values()
        if cls.needs_judge
        for c in cls.columns
        if (m := METRICS.metric(c)) is None or m.direction is not None
    ]


__all__ = ["CachingTransport", "JudgeCache", "JudgeLLM", "judged_columns"]
