"""Knowledge index behaviour with a fake, deterministic embedder that counts what it embeds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
from pathlib import Path

# llama-index's imports take 1-3 s (VectorStoreIndex pulls langchain in to resolve the embedding model):
# paid once at collection, not by whichever test happens to run first
import llama_index.core.bridge.langchain
import llama_index.retrievers.bm25  # noqa: F401
import numpy as np
import pytest

from workbench.knowledge import KnowledgeError, clear_cache, default_index_dir, open_index
from workbench.knowledge.chunking import CHUNK_TOKENS, chunk_documents, count_tokens, read_folder, split_sentences
from workbench.strategies.base import Passage

DOCS = {
    "hours.md": "# Opening Hours\n\nWe are open Monday to Friday from 8 am to 6 pm.\n\n"
    "- Saturday: 9 am to 1 pm\n- Sunday: closed\n",
    "parking.md": "# Parking\n\nFree parking behind the building with 40 spaces. The entrance is on Elm Avenue.\n",
    "insurance.md": "# Insurance\n\nWe are in network with Cigna, Aetna and Blue Cross. Call billing at extension 2.\n",
    "notes/massage.txt": "Massage therapy costs 105 dollars for sixty minutes with Jonah at Lakeside.\n",
}


class FakeEmbedder:
    """Bag of hashed words: similar texts get similar unit vectors; every call is recorded."""

    name = "fake-bow"
    dim = 64

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[str] = []

    @property
    def texts(self) -> list[str]:
        return [t for b in self.batches for t in b]

    def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.threads.append(threading.current_thread().name)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "kb"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "index"


def _open(kb: Path, out: Path, emb: FakeEmbedder | None = None, **kw):
    """Unwarmed, so ``emb`` records exactly the document and query embeddings."""
    emb = emb or FakeEmbedder()
    return open_index(kb, embedder=emb, out=out, warm=False, **kw), emb


def test_build_persists_hashes_and_vectors(kb: Path, out: Path) -> None:
    index, emb = _open(kb, out)
    s = index.stats
    assert s["mode"] == "built" and s["documents"] == 4
    assert s["chunks"] >= 4 and s["embedded"] == s["chunks"] == len(emb.texts) and s["reused"] == 0
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    expected = {f"kb/{n}": hashlib.sha256(t.encode()).hexdigest() for n, t in DOCS.items()}
    assert manifest["documents"] == expected
    assert (out / "store" / "docstore.json").stat().st_size > 0
    assert (out / "store" / "default__vector_store.json").stat().st_size > 0


def test_reload_makes_zero_embedding_calls(kb: Path, out: Path) -> None:
    first, _ = _open(kb, out)
    expected = [(p.source, p.text) for p in first.retrieve("parking spaces Elm Avenue", 2)]
    clear_cache()
    index, emb = _open(kb, out)
    assert index is not first
    assert emb.batches == []  # nothing embedded to load
    assert index.stats["mode"] == "loaded" and index.stats["embedded"] == 0
    assert index.stats["reused"] == first.stats["chunks"]
    got = [(p.source, p.text) for p in index.retrieve("parking spaces Elm Avenue", 2)]
    assert got == expected and emb.batches == [["parking spaces Elm Avenue"]]  # only the query


def test_editing_one_document_reembeds_only_it_and_changes_results(kb: Path, out: Path) -> None:
    index, _ = _open(kb, out)
    assert "40 spaces" in index.retrieve("how many parking spaces", 1)[0].text
    clear_cache()
    (kb / "parking.md").write_text("# Parking\n\nParking now costs 3 dollars per hour in the garage on Oak Street.\n")
    index, emb = _open(kb, out)
    assert index.stats["mode"] == "updated" and index.stats["changed"] == ["kb/parking.md"]
    assert emb.texts and all("Oak Street" in t for t in emb.texts)  # no other document was re-embedded
    assert index.stats["embedded"] == len(emb.texts) and index.stats["reused"] == index.stats["chunks"] - len(emb.texts)
    best = index.retrieve("parking garage Oak Street", 1)[0]
    assert best.source == "kb/parking.md" and "Oak Street" in best.text
    assert all("40 spaces" not in p.text for p in index.retrieve("parking spaces", 4))  # old chunks are gone


def test_same_shared_index_picks_up_an_edit_on_the_next_open(kb: Path, out: Path) -> None:
    emb = FakeEmbedder()
    index, _ = _open(kb, out, emb)
    (kb / "insurance.md").write_text("# Insurance\n\nWe no longer accept Cigna as of March.\n")
    again, _ = _open(kb, out, emb)
    assert again is index and index.stats["mode"] == "updated" and index.stats["changed"] == ["kb/insurance.md"]
    assert "no longer" in index.retrieve("do you accept Cigna", 1)[0].text


def test_touched_mtime_with_same_content_does_not_rebuild(kb: Path, out: Path) -> None:
    _open(kb, out)
    store_mtime = (out / "store" / "manifest.json").stat().st_mtime_ns
    for p in kb.rglob("*.*"):
        os.utime(p, (1_900_000_000, 1_900_000_000))
    clear_cache()
    index, emb = _open(kb, out)
    assert emb.batches == [] and index.stats["mode"] == "loaded"
    assert (out / "store" / "manifest.json").stat().st_mtime_ns == store_mtime  # not even rewritten


def test_removed_document_is_dropped_and_added_one_embedded(kb: Path, out: Path) -> None:
    _open(kb, out)
    (kb / "insurance.md").unlink()
    (kb / "refills.md").write_text("# Refills\n\nPrescription refills take 3 business days.\n")
    clear_cache()
    index, emb = _open(kb, out)
    assert index.stats["removed"] == ["kb/insurance.md"] and index.stats["changed"] == ["kb/refills.md"]
    assert all("Refills" in t or "refills" in t for t in emb.texts)
    sources = {p.source for p in index.retrieve("Cigna insurance billing prescription refills", 10)}
    assert "kb/insurance.md" not in sources and "kb/refills.md" in sources
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    assert set(manifest["documents"]) == {"kb/hours.md", "kb/parking.md", "kb/notes/massage.txt", "kb/refills.md"}


def test_rebuild_flag_and_changed_settings_reembed_everything(kb: Path, out: Path) -> None:
    index, _ = _open(kb, out)
    n = index.stats["chunks"]
    clear_cache()
    index, emb = _open(kb, out, rebuild=True)
    assert index.stats["mode"] == "rebuilt" and len(emb.texts) == n
    clear_cache()
    other = FakeEmbedder()
    other.name = "another-model"  # vectors from another model cannot be mixed in
    index, _ = _open(kb, out, other)
    assert index.stats["mode"] == "built" and len(other.texts) == n


def test_damaged_store_is_rebuilt_not_fatal(kb: Path, out: Path) -> None:
    _open(kb, out)
    (out / "store" / "docstore.json").write_text("{not json")
    clear_cache()
    index, emb = _open(kb, out)
    assert index.stats["mode"] == "built" and len(emb.texts) == index.stats["chunks"]
    assert index.retrieve("parking", 1)[0].source == "kb/parking.md"


def test_sources_are_relative_to_the_folders_parent_and_scores_descend(kb: Path, out: Path) -> None:
    index, _ = _open(kb, out)
    passages = index.retrieve("massage sixty minutes Jonah Lakeside", 3)
    assert len(passages) == 3 and all(isinstance(p, Passage) for p in passages)
    assert passages[0].source == "kb/notes/massage.txt"
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert passages[0].score <= 1.0 + 1e-6
    assert index.retrieve("   ", 3) == [] and index.retrieve("parking", 0) == []
    assert len(index.retrieve("parking", 50)) == index.stats["chunks"]


def test_bm25_rescues_an_exact_keyword_the_vectors_miss(kb: Path, out: Path) -> None:
    class Blind(FakeEmbedder):  # every vector the same: only BM25 can tell documents apart
        def embed(self, texts: list[str]) -> np.ndarray:
            super().embed(texts)
            return np.tile(np.eye(1, self.dim, dtype=np.float32), (len(texts), 1))

    index, _ = _open(kb, out, Blind())
    assert index.retrieve("Cigna", 1)[0].source == "kb/insurance.md"


def test_default_location_is_under_the_state_dir(tmp_path: Path) -> None:
    a = default_index_dir(tmp_path / "x" / "knowledge", tmp_path / "state")
    b = default_index_dir(tmp_path / "y" / "knowledge", tmp_path / "state")
    assert a.parent == tmp_path / "state" / "indexes" and a.name.startswith("knowledge-") and a != b


def test_open_index_is_shared_per_folder_and_embedder(kb: Path, out: Path) -> None:
    emb = FakeEmbedder()
    a, _ = _open(kb, out, emb)
    b, _ = _open(kb, out, emb)
    c, _ = _open(kb, out, FakeEmbedder())
    assert a is b and c is not a
    assert b.stats["mode"] == "unchanged" and b.stats["embedded"] == 0


async def test_aretrieve_embeds_off_the_event_loop_and_caches_the_query(kb: Path, out: Path) -> None:
    index, emb = _open(kb, out)
    emb.threads.clear()
    loop_thread = threading.current_thread().name
    first = await index.aretrieve("free parking Elm Avenue", 2)
    assert emb.threads == [emb.threads[0]] and emb.threads[0] != loop_thread
    again = await asyncio.gather(*(index.aretrieve("free parking Elm Avenue", 2) for _ in range(3)))
    assert all(r == first for r in again) and len(emb.threads) == 1  # cached: no second forward pass
    assert first == index.retrieve("free parking Elm Avenue", 2)


def test_empty_folder_is_a_clear_error(tmp_path: Path, out: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(KnowledgeError, match="has no documents"):
        open_index(empty, embedder=FakeEmbedder(), out=out)
    with pytest.raises(KnowledgeError, match="does not exist"):
        open_index(tmp_path / "missing", embedder=FakeEmbedder(), out=out)
    (empty / "blank.md").write_text("  \n")
    with pytest.raises(KnowledgeError, match="every document is empty"):
        open_index(empty, embedder=FakeEmbedder(), out=out)


def test_unreadable_document_is_a_clear_error_and_the_index_survives(kb: Path, out: Path, monkeypatch) -> None:
    index, _ = _open(kb, out)
    before = (out / "store" / "manifest.json").read_text()
    (kb / "broken.md").write_bytes(b"# Broken\n\xff\xfe not utf-8")
    with pytest.raises(KnowledgeError, match=r"broken\.md is not UTF-8"):
        _open(kb, out)
    (kb / "broken.md").unlink()

    real = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "parking.md":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(KnowledgeError, match=r"cannot read knowledge document .*parking\.md: Permission denied"):
        _open(kb, out)
    assert (out / "store" / "manifest.json").read_text() == before  # nothing lost
    assert index.retrieve("parking", 1)[0].source == "kb/parking.md"  # the open index still answers


def test_no_network_and_no_remote_llm(kb: Path, out: Path, network_guard) -> None:
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM

    index, _ = _open(kb, out)
    index.retrieve("hours on Saturday", 2)
    assert network_guard.attempts == []
    assert isinstance(Settings.llm, MockLLM)


def test_chunks_are_small_markdown_aware_and_point_to_their_document(tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    long_list = "\n".join(f"- Item {i}: this service costs {i * 10} dollars per visit." for i in range(30))
    (folder / "prices.md").write_text(f"# Prices\n\nIntro sentence.\n\n## Visits\n\n{long_list}\n\n## Other\n\nDone.\n")
    nodes = chunk_documents(read_folder(folder))
    assert len(nodes) > 3
    assert all(count_tokens(n.text) <= CHUNK_TOKENS for n in nodes)
    assert all(
        n.ref_doc_id == "kb/prices.md" and n.metadata == {"source": "kb/prices.md", "title": "Prices"} for n in nodes
    )
    assert [n.node_id for n in nodes] == [f"kb/prices.md#{i}" for i in range(len(nodes))]
    # list items are never cut in half
    items = [line for n in nodes for line in n.text.splitlines() if line.startswith("- Item")]
    assert set(items) >= {f"- Item {i}: this service costs {i * 10} dollars per visit." for i in range(30)}
    assert any(n.text.startswith("## Other") for n in nodes)  # a new section starts a new chunk


def test_sentence_split_keeps_text_verbatim() -> None:
    text = "First one. Second one!\n- a list item\n- another\n1. numbered\nplain line\nstill same"
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert parts[:2] == ["First one. ", "Second one!\n"]
    assert any(p.startswith("- a list item") for p in parts) and any(p.startswith("1. numbered") for p in parts)


def test_cli_index_builds_then_reuses_and_reports_errors(kb: Path, out: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    emb = FakeEmbedder()
    monkeypatch.setattr("workbench.models.ModelStack.embedder", lambda self: emb)
    runner = CliRunner()
    first = runner.invoke(app, ["index", str(kb), "--out", str(out)], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    n = len(emb.texts)
    assert f"built: 4 documents, {n} chunks, {n} embedded now, 0 reused" in first.output
    assert str(out) in first.output.replace("\n", "")
    clear_cache()
    again = runner.invoke(app, ["index", str(kb), "--out", str(out)], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and f"loaded: 4 documents, {n} chunks, 0 embedded now, {n} reused" in again.output
    assert len(emb.texts) == n
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(app, ["index", str(empty), "--out", str(out)], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "cannot index" in bad.output and "has no documents" in bad.output


def test_model_loads_only_when_something_needs_embedding(kb: Path, tmp_path: Path) -> None:
    from workbench.core.config import WorkbenchConfig
    from workbench.knowledge import LlamaIndexEmbedding

    class FakeStack:  # what open_index uses of a ModelStack: the config and the embedder factory
        def __init__(self) -> None:
            self.config = WorkbenchConfig(state_dir=tmp_path / "state")
            self.loads = 0

        def embedder(self) -> FakeEmbedder:
            self.loads += 1
            return FakeEmbedder()

    first = FakeStack()
    index = open_index(kb, first)  # type: ignore[arg-type]
    assert first.loads == 1 and Path(index.stats["index_dir"]) == default_index_dir(kb, tmp_path / "state").resolve()
    clear_cache()
    second = FakeStack()
    index = open_index(kb, second, warm=False)  # type: ignore[arg-type]
    assert index.stats["mode"] == "loaded" and second.loads == 0  # reopening embeds nothing: no model load
    assert index.retrieve("parking", 1)[0].source == "kb/parking.md" and second.loads == 1
    clear_cache()
    third = FakeStack()
    index = open_index(kb, third)  # type: ignore[arg-type]
    assert third.loads == 1 and index.stats["embedded"] == 0  # warmed for the first live turn, not counted
    with pytest.raises(TypeError, match="name="):
        LlamaIndexEmbedding(second.embedder)
