"""Knowledge indexing: a persistent hybrid BM25 + MiniLM index over a folder of documents.

``open_index(folder, stack)`` returns a shared :class:`KnowledgeIndex`; ``retrieve(query, top_k)``
gives :class:`~workbench.strategies.base.Passage` objects whose ``source`` (``knowledge/<file>.md``)
compares directly with a dataset's reference contexts.
"""

from workbench.knowledge.chunking import KnowledgeError
from workbench.knowledge.embedding import LlamaIndexEmbedding
from workbench.knowledge.index import KnowledgeIndex, clear_cache, default_index_dir, open_index

__all__ = ["KnowledgeError", "KnowledgeIndex", "LlamaIndexEmbedding", "clear_cache", "default_index_dir", "open_index"]
