"""Embedded model stack: LLM server, STT, TTS, VAD, end of turn, embeddings, and their lifecycle."""

from workbench.models.assets import MissingAssetError
from workbench.models.stack import ModelStack, ResolvedEndpoint

__all__ = ["MissingAssetError", "ModelStack", "ResolvedEndpoint"]
