"""Our MiniLM as a llama-index ``BaseEmbedding``: the asset comes from the installed package, never the hub.

Query embeddings are cached by text because replays and repeat runs ask the same questions again
and a MiniLM forward pass is most of the retrieval budget (a new question: ~3-6 ms with the default fp16
weights and frozen graph, 11-25 ms with ``SentenceTransformer.encode`` in fp32, on two shared cores). Embedding
runs torch on one thread: measured here, two OpenMP threads on two cores that other processes also
use made a query 5-10x slower (median 190-270 ms against 24-41 ms at load 5) and a 123-chunk build
2x slower (7.6-9.1 s against 4.5-4.7 s), and barely help on an idle machine.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr


class Embedder(Protocol):
    """What we need from an embedder: ``workbench.models.embeddings.MiniLMEmbedder`` or a test fake."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads for the block (process-wide in torch, so serialised here)."""
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class LlamaIndexEmbedding(BaseEmbedding):
    """Our MiniLM embedder (:class:`~workbench.models.embeddings.MiniLMEmbedder`) as a llama-index embedding.

    ``calls`` and ``texts_embedded`` count real embedder work, so tests and the CLI summary can tell
    embedding from reuse; ``query_vector`` is the fast path retrieval uses (a cached float32 array).
    """

    model_name: str = "all-MiniLM-L6-v2"
    embed_batch_size: int = 64
    query_cache_size: int = 1024
    torch_threads: int | None = 1  # None: leave torch's thread count alone

    _embedder: Any = PrivateAttr(default=None)
    _factory: Any = PrivateAttr(default=None)
    _warm: bool = PrivateAttr(default=False)
    _cache: OrderedDict[str, np.ndarray] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: int = PrivateAttr(default=0)
    _texts: int = PrivateAttr(default=0)

    def __init__(self, embedder: Embedder | Callable[[], Embedder], name: str | None = None, **kwargs: Any) -> None:
        """``embedder`` may be a factory (with ``name`` given): the model then loads on the first embedding,
        so reopening an unchanged index, which embeds nothing, does not pay for loading it."""
        if name is None:
            name = getattr(embedder, "name", None)
            if name is None:
                raise TypeError("LlamaIndexEmbedding needs an embedder with a .name, or name= with a factory")
        super().__init__(model_name=name, **kwargs)
        self._embedder = embedder if hasattr(embedder, "embed") else None
        self._factory = None if self._embedder is not None else embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = self._factory()  # type: ignore[misc]
        return self._embedder

    @classmethod
    def class_name(cls) -> str:
        return "WorkbenchMiniLMEmbedding"

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def texts_embedded(self) -> int:
        return self._texts

    def warm(self) -> None:
        """Load the model and run one tiny forward pass now, so the first live query pays neither.

        Not counted in ``calls``/``texts_embedded``: those count document and query work only.
        """
        if not self._warm:
            with torch_threads(self.torch_threads):
                self.embedder.embed(["warm up"])
            self._warm = True

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed documents in one batch call; returns an (n, dim) float32 matrix of unit vectors."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with torch_threads(self.torch_threads):
            vecs = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        with self._lock:
            self._calls += 1
            self._texts += len(texts)
        return vecs

    def is_cached(self, query: str) -> bool:
        return query in self._cache

    def clear_query_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def query_vector(self, query: str) -> np.ndarray:
        """The query's unit vector, from the cache when this text was asked before."""
        with self._lock:
            hit = self._cache.get(query)
            if hit is not None:
                self._cache.move_to_end(query)
                return hit
        vec = self.embed_texts([query])[0]
        vec.setflags(write=False)  # shared by every caller of the cache
        with self._lock:
            self._cache[query] = vec
            while len(self._cache) > self.query_cache_size:
                self._cache.popitem(last=False)
        return vec

    # -- llama-index interface ---------------------------------------------------------
    def _get_query_embedding(self, query: str) -> list[float]:
        return self.query_vector(query).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed_texts([text])[0].tolist()

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed_texts(texts).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._get_text_embeddings(texts)
