"""`ModelIdentity`: what an index records about the model that built it (kept in the manifest).

A record of plain values shared by both sides without either importing the other: the store (manifest, writer)
reads and compares it and never imports the model side; `xclip_search.checkpoint` builds one from a loaded
checkpoint (and re-exports the name for older imports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    """What an index records about the model that built it; a mismatch on reopen is refused."""

    source: str
    revision: str | None
    config_hash: str
    num_frames: int
    image_size: int
    embed_dim: int
    num_tokens: int
    pixels: str = "pil"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "revision": self.revision,
            "config_hash": self.config_hash,
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "embed_dim": self.embed_dim,
            "num_tokens": self.num_tokens,
            "pixels": self.pixels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(
            source=str(d["source"]),
            revision=d.get("revision"),
            config_hash=str(d["config_hash"]),
            num_frames=int(d["num_frames"]),
            image_size=int(d["image_size"]),
            embed_dim=int(d["embed_dim"]),
            num_tokens=int(d["num_tokens"]),
            pixels=str(d.get("pixels", "pil")),
        )


__all__ = ["ModelIdentity"]
