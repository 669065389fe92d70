"""Open-vocabulary tagging: every label scored against every segment with X-CLIP's prompted score.

Probabilities are X-CLIP's zero-shot classification: softmax over the given labels of
``exp(logit_scale) · score``. Because only ``v`` and ``Z`` are needed, a whole indexed library can be tagged
with a new vocabulary without decoding a frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .encoder import XClipEncoder
from .errors import InvalidArgumentError
from .prompting import PromptScorer

if TYPE_CHECKING:
    from .filters import SearchFilter
    from .store.snapshot import Snapshot

MAX_LABELS = 10_000


@dataclass(frozen=True)
class LabelScore:
    """A label's probability and X-CLIP's prompted score for it; `scored_by` is "concept" when the label names
    a learned concept (then `prob` is the concept's probability, not X-CLIP's softmax)."""

    label: str
    prob: float
    score: float
    scored_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "prob": self.prob, "score": self.score}
        if self.scored_by is not None:
            out["scored_by"] = self.scored_by
        return out


#: Probabilities for some labels from elsewhere (learned concepts, `xclip_search.learning.label_probs`):
#: (labels, scores (B, L), v, z) -> (probabilities (B, L), which labels it scored).
Prober = Callable[[Sequence[str], np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, list[bool]]]


def parse_labels(labels: str | None = None, labels_file: Path | None = None) -> list[str]:
    """Labels from ``"a,b,c"`` and/or a file (one per line, ``#`` comments), stripped and de-duplicated."""
    items: list[str] = []
    if labels:
        items.extend(labels.split(","))
    if labels_file is not None:
        try:
            text = Path(labels_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"Cannot read labels file {labels_file}: {exc}") from exc
        items.extend(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return clean_labels(items)


def clean_labels(items: Sequence[str]) -> list[str]:
    """Labels stripped and de-duplicated in order; none, or more than `MAX_LABELS`, is refused."""
    cleaned = list(dict.fromkeys(s.strip() for s in items if s and s.strip()))
    if not cleaned:
        raise InvalidArgumentError("No labels given", hint='Give labels such as "running, cooking, playing guitar".')
    if len(cleaned) > MAX_LABELS:
        raise InvalidArgumentError(f"Too many labels ({len(cleaned)}). At most {MAX_LABELS} are supported.")
    return cleaned


@dataclass(frozen=True)
class SegmentTags:
    """The labels of one indexed segment (whole-index tagging)."""

    segment_id: int
    video_id: int
    path: str
    start: float
    end: float
    labels: list[LabelScore]

    def to_dict(self) -> dict[str, Any]:
        """A ``results`` entry of ``tag --json`` (contract)."""
        return {
            "path": self.path,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "labels": [x.to_dict() for x in self.labels],
        }


def check_selection(top: int | None, min_prob: float | None) -> None:
    if top is not None and top < 1:
        raise InvalidArgumentError(f"Invalid top ({top}). It must be at least 1.")
    if min_prob is not None and not 0.0 <= min_prob <= 1.0:
        raise InvalidArgumentError(f"Invalid min-prob ({min_prob}). It must be between 0 and 1.")


class Tagger:
    """Scores a label vocabulary against stored or freshly encoded segments."""

    def __init__(self, encoder: XClipEncoder, scorer: PromptScorer) -> None:
        self.encoder = encoder
        self.scorer = scorer
        self.logit_scale = float(encoder.model.logit_scale.detach().exp().item())

    def tag(
        self,
        v: np.ndarray,
        z: np.ndarray,
        labels: Sequence[str],
        *,
        top: int | None = None,
        min_prob: float | None = None,
        prober: Prober | None = None,
    ) -> list[list[LabelScore]]:
        """For each segment, its labels sorted by probability (the `top` most probable, those >= `min_prob`)."""
        check_selection(top, min_prob)
        t = self.encoder.encode_texts(list(labels))
        scores = self.scorer.score(v, z, t)
        if prober is not None:
            probs, flags = prober(labels, scores, v, z)
            return [self._rank(row, labels, top, min_prob, p, flags) for row, p in zip(scores, probs, strict=True)]
        return [self._rank(row, labels, top, min_prob) for row in scores]

    def tag_index(
        self,
        snapshot: Snapshot,
        labels: Sequence[str],
        *,
        top: int | None = None,
        min_prob: float | None = None,
        where: SearchFilter | None = None,
        batch_size: int = 1024,
        on_batch: Callable[[list[SegmentTags]], None] | None = None,
        offset: int = 0,
        limit: int | None = None,
        prober: Prober | None = None,
    ) -> Iterator[SegmentTags]:
        """Tag every live segment of `snapshot` (or those `where` keeps) from its stored ``v`` and ``Z``.

        Segments come in id order, `batch_size` at a time, so a library of millions streams through in
        bounded memory; ``Z`` is read by memory map, in shard order. `offset`/`limit` take one page of them.
        `on_batch` sees each finished batch (saving tags, progress) before its segments are yielded.
        """
        check_selection(top, min_prob)
        if offset < 0 or (limit is not None and limit < 1):
            raise InvalidArgumentError(f"Invalid page (offset {offset}, limit {limit}).")
        labels = list(labels)
        t = self.encoder.encode_texts(labels)
        ids = None
        if where or offset or limit is not None:
            ids = snapshot.catalog.segment_ids_where(snapshot.generation, where.clause() if where else None)
            ids = ids[offset : None if limit is None else offset + limit]
        for rows in snapshot.catalog.iter_segments(snapshot.generation, ids, batch=batch_size):
            seg_ids = np.array([r.id for r in rows], dtype=np.int64)
            v, z = snapshot.vectors.gather(seg_ids)
            scores = self.scorer.score(v, z, t)
            probs, flags = prober(labels, scores, v, z) if prober is not None else (None, None)
            done = [
                SegmentTags(
                    segment_id=r.id,
                    video_id=r.video_id,
                    path=r.path,
                    start=r.start_s,
                    end=r.end_s,
                    labels=self._rank(row, labels, top, min_prob, None if probs is None else probs[i], flags),
                )
                for i, (r, row) in enumerate(zip(rows, scores, strict=True))
            ]
            if on_batch is not None:
                on_batch(done)
            yield from done

    def _rank(
        self,
        scores: np.ndarray,
        labels: Sequence[str],
        top: int | None,
        min_prob: float | None = None,
        given: np.ndarray | None = None,
        flags: list[bool] | None = None,
    ) -> list[LabelScore]:
        if given is not None:
            probs = np.asarray(given, np.float64)
        else:
            logits = self.logit_scale * scores.astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        if top is not None:
            order = order[:top]
        if min_prob is not None:
            order = order[probs[order] >= min_prob]
        return [
            LabelScore(
                label=labels[i],
                prob=float(probs[i]),
                score=float(scores[i]),
                scored_by="concept" if flags is not None and flags[i] else None,
            )
            for i in order
        ]


def tags_to_json(
    path: str, spans: Iterable[tuple[float, float]], tags: Iterable[list[LabelScore]]
) -> list[dict[str, Any]]:
    """The ``results`` entries of ``tag --json`` (contract) for one video."""
    return [
        {"path": path, "start": round(s, 3), "end": round(e, 3), "labels": [x.to_dict() for x in labels]}
        for (s, e), labels in zip(spans, tags, strict=True)
    ]
