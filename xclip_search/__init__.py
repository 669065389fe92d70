"""xclip-search: index a video library and find moments in it by text, with X-CLIP's exact scores.

    from xclip_search import Index
    with Index.open("xclip-index") as index:
        hits = index.search("a cat jumping onto a table", top_k=5)

Heavy modules (torch, transformers, faiss) load on first use, so light parts such as frame sampling and pixel
preprocessing can run in decode workers without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    DependencyError,
    IndexBusyError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    VideoError,
    XClipSearchError,
)

__version__ = "0.1.0"

_LAZY = {
    "Index": ".index",
    "default_index_dir": ".defaults",
    "SearchHit": ".results",
    "SearchResults": ".results",
    "SearchFilter": ".filters",
    "LabelScore": ".tagging",
    "parse_labels": ".tagging",
    "Checkpoint": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "XClipEncoder": ".encoder",
    "PromptScorer": ".prompting",
    "Tagger": ".tagging",
}

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, load_checkpoint
    from .defaults import default_index_dir
    from .encoder import XClipEncoder
    from .filters import SearchFilter
    from .index import Index
    from .prompting import PromptScorer
    from .results import SearchHit, SearchResults
    from .tagging import LabelScore, Tagger, parse_labels


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'xclip_search' has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DependencyError",
    "Index",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "InvalidArgumentError",
    "LabelScore",
    "PromptScorer",
    "SearchFilter",
    "SearchHit",
    "SearchResults",
    "Tagger",
    "VideoError",
    "XClipEncoder",
    "XClipSearchError",
    "__version__",
    "default_index_dir",
    "load_checkpoint",
    "parse_labels",
]
