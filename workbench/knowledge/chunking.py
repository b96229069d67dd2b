"""Reading a knowledge folder and cutting it into small, Markdown-aware chunks.

Chunks are small (about 60 words) because a voice answer speaks one or two facts: a short passage
keeps the prompt short and lets the extractive baseline read it aloud. Sizes are counted with a
plain regex and sentences split with one, so nothing depends on a tokenizer vocabulary or NLTK data
that could be fetched at run time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
from llama_index.core.schema import NodeRelationship, TextNode

SUFFIXES = (".md", ".markdown", ".txt")
# Chunk size in regex tokens (words and punctuation, ~60 words). Measured on the demo set (95 turns):
# 48/64/80 tokens gave context recall@3 0.77-0.81 and fact coverage@3 0.70-0.80; 80 with the title had
# the best fact coverage at the same recall. Bigger chunks make longer prompts for little gain.
CHUNK_TOKENS = 80
CHUNK_OVERLAP = 16

_TOKEN = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! ? before whitespace, except after a title (Dr.), "e.g." or a list number ("2.");
# a Markdown list item or table row starts a new one.
_NOT_A_SENTENCE_END = (
    r"\bDr\.",
    r"\bMr\.",
    r"\bMs\.",
    r"\bMrs\.",
    r"\bSt\.",
    r"\be\.g\.",
    r"\bi\.e\.",
    r"^\d\.",
    r"^\d\d\.",
)
_NOT_AN_END = "".join(rf"(?<!{prefix})" for prefix in _NOT_A_SENTENCE_END)
_SENTENCE_BREAK = re.compile(rf"(?<=[.!?]){_NOT_AN_END}\s+|\n(?=\s*(?:[-*+]\s|\d+[.)]\s|\|))", re.M)


class KnowledgeError(ValueError):
    """A knowledge folder that cannot be indexed; the message names the folder or file."""


@dataclass(frozen=True)
class SourceDoc:
    """One document as read from disk: ``source`` is its path relative to the folder's parent."""

    source: str
    path: Path
    text: str
    sha256: str


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def split_sentences(text: str) -> list[str]:
    """Sentences and list items, whitespace kept so the splitter can join them back verbatim."""
    parts: list[str] = []
    last = 0
    for m in _SENTENCE_BREAK.finditer(text):
        parts.append(text[last : m.end()])
        last = m.end()
    if last < len(text):
        parts.append(text[last:])
    return [p for p in parts if p]


def document_paths(folder: Path) -> list[Path]:
    """Markdown and text files under ``folder``, sorted, skipping hidden files and folders."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found)


def read_folder(folder: Path) -> list[SourceDoc]:
    """Every document with its content hash; a clear :class:`KnowledgeError` for anything unusable."""
    if not folder.exists():
        raise KnowledgeError(f"knowledge folder {folder} does not exist")
    if not folder.is_dir():
        raise KnowledgeError(f"knowledge folder {folder} is not a folder")
    paths = document_paths(folder)
    if not paths:
        raise KnowledgeError(f"knowledge folder {folder} has no documents ({', '.join(SUFFIXES)} files)")
    docs = []
    for p in paths:
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise KnowledgeError(f"cannot read knowledge document {p}: {e.strerror or e}") from e
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise KnowledgeError(f"knowledge document {p} is not UTF-8 text (byte {e.start}): {e.reason}") from e
        source = (Path(folder.name) / p.relative_to(folder)).as_posix()
        docs.append(SourceDoc(source, p, text, hashlib.sha256(raw).hexdigest()))
    if not any(d.text.strip() for d in docs):
        raise KnowledgeError(f"knowledge folder {folder}: every document is empty")
    return docs


def splitter_settings() -> dict[str, object]:
    """What changes chunk boundaries; stored with the index so a change forces a full rebuild."""
    return {"parser": "markdown+sentence+title", "chunk_tokens": CHUNK_TOKENS, "overlap": CHUNK_OVERLAP, "version": 1}


def title(text: str, source: str) -> str:
    """The first Markdown heading, else the file name: what a chunk of a list or table is about."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return Path(source).stem.replace("-", " ").replace("_", " ")


def chunk_documents(docs: list[SourceDoc]) -> list[TextNode]:
    """Markdown sections, then sentence-packed chunks; every chunk points back to its document.

    ``ref_doc_id`` is the document's ``source`` so llama-index can delete a changed document's chunks.
    """
    documents = [
        Document(
            text=d.text,
            id_=d.source,
            metadata={"source": d.source},
            excluded_embed_metadata_keys=["source"],
            excluded_llm_metadata_keys=["source"],
        )
        for d in docs
        if d.text.strip()
    ]
    sections = MarkdownNodeParser(include_prev_next_rel=False)(documents)
    splitter = SentenceSplitter(
        chunk_size=CHUNK_TOKENS,
        chunk_overlap=CHUNK_OVERLAP,
        paragraph_separator="\n\n",
        tokenizer=_TOKEN.findall,
        chunking_tokenizer_fn=split_sentences,
        include_prev_next_rel=False,
    )
    by_id = {d.id_: d for d in documents}
    nodes: list[TextNode] = []
    per_doc: dict[str, int] = {}
    for section in sections:
        doc = by_id[section.ref_doc_id or ""]
        section.excluded_embed_metadata_keys = section.excluded_llm_metadata_keys = list(section.metadata)
        for node in splitter([section]):
            assert isinstance(node, TextNode)
            k = per_doc[doc.id_] = per_doc.get(doc.id_, -1) + 1
            node.id_ = f"{doc.id_}#{k}"
            node.relationships = {NodeRelationship.SOURCE: doc.as_related_node_info()}
            # the document title is embedded and BM25-indexed with every chunk: a bare list of hours or
            # prices says nothing about which location or service it belongs to
            node.metadata = {"source": doc.id_, "title": title(doc.text, doc.id_)}
            node.excluded_embed_metadata_keys = ["source"]
            node.excluded_llm_metadata_keys = ["source"]
            nodes.append(node)
    return nodes
