"""The concepts half of `Catalog`: learned concepts stored, listed, read and removed (learn, concepts, forget).

A concept is a row: its classifier as JSON text (the store neither reads nor runs it), the X-CLIP checkpoint it
was learned with (source and configuration hash), the examples it came from and its held-out accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, inspect, select

from .manifest import now_iso
from .schema import concepts


@dataclass(frozen=True)
class ConceptRow:
    """One stored concept; `examples` are their descriptions (``segment:ID`` or ``PATH@START-END``)."""

    name: str
    model: str
    model_source: str
    model_hash: str
    method: str
    text: str | None
    examples: tuple[str, ...]
    positives: int
    negatives: int
    held_out_accuracy: float | None
    learned_at: str

    def summary(self) -> dict[str, Any]:
        """The JSON of ``concepts --json`` for this concept (no classifier weights)."""
        return {
            "name": self.name,
            "examples": list(self.examples),
            "positives": self.positives,
            "negatives": self.negatives,
            "learned_at": self.learned_at,
            "held_out_accuracy": self.held_out_accuracy,
            "text": self.text,
            "method": self.method,
            "model": self.model_source,
        }


class CatalogConcepts:
    """Statements on the ``concepts`` table."""

    engine: Engine

    def _has_concepts_table(self) -> bool:
        return bool(inspect(self.engine).has_table("concepts"))

    def save_concept(self, row: ConceptRow) -> None:
        """Store `row`, replacing a concept of the same name (learning again updates it)."""
        values = {
            "name": row.name,
            "model": row.model,
            "model_source": row.model_source,
            "model_hash": row.model_hash,
            "method": row.method,
            "text": row.text,
            "examples": json.dumps(list(row.examples)),
            "positives": row.positives,
            "negatives": row.negatives,
            "held_out_accuracy": row.held_out_accuracy,
            "learned_at": row.learned_at or now_iso(),
        }
        with self.engine.begin() as conn:
            conn.execute(delete(concepts).where(concepts.c.name == row.name))
            conn.execute(concepts.insert().values(**values))

    def concept_rows(self, names: Sequence[str] | None = None) -> list[ConceptRow]:
        """Stored concepts (those named in `names` only, if given), by name."""
        if not self._has_concepts_table():
            return []
        query = select(concepts).order_by(concepts.c.name)
        if names is not None:
            if not names:
                return []
            query = query.where(concepts.c.name.in_([str(n) for n in names]))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def forget_concept(self, name: str) -> bool:
        """Remove a concept; False if none has that name."""
        if not self._has_concepts_table():
            return False
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(concepts).where(concepts.c.name == name)).rowcount)


def _row(r: Any) -> ConceptRow:
    return ConceptRow(
        name=str(r["name"]),
        model=str(r["model"]),
        model_source=str(r["model_source"]),
        model_hash=str(r["model_hash"]),
        method=str(r["method"]),
        text=None if r["text"] is None else str(r["text"]),
        examples=tuple(json.loads(r["examples"])),
        positives=int(r["positives"]),
        negatives=int(r["negatives"]),
        held_out_accuracy=None if r["held_out_accuracy"] is None else float(r["held_out_accuracy"]),
        learned_at=str(r["learned_at"]),
    )
