"""Concepts over an index: gather examples, learn, score labels, rank moments, refine a search from feedback.

The classifier is `xclip_search.concepts`; this module feeds it. Examples are indexed moments (their stored
``v`` and ``Z``, read from the index: nothing is decoded) or files outside the index, embedded by the caller
exactly as the index would (the query-by-example path, `indexer.embed.embed_files` with the index's
segmentation). Negatives default to a random sample of the index's live segments.

Scoring a concept over the whole index streams: live segment ids in chunks, each chunk's ``v`` (and ``Z`` when
the concept's text is an input) read by memory map, scored, and dropped; a ranking keeps only the current best
`top_k` (per video), so memory is bounded by the chunk, whatever the index's size.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .concepts import DEFAULT_NEGATIVES, METHOD, ConceptModel, FitReport, check_name, fit_concept, tag_probs
from .encoder import XClipEncoder
from .errors import IndexMismatchError, InvalidArgumentError, NotFoundError
from .prompting import PromptScorer
from .results import SearchHit, SearchResults, check_search_args
from .store.catalog import ConceptRow
from .store.manifest import now_iso
from .store.snapshot import Snapshot

#: Segments scored per step when a concept is scored over the index.
CHUNK = 4096
#: Candidates each side (text search, concept) contributes to a text + concept search.
FUSION_CANDIDATES = 200


@dataclass(frozen=True)
class Moments:
    """Example segments: their ``v`` (n, D), ``Z`` (n, N, D), and one description per example they came from."""

    v: np.ndarray
    z: np.ndarray
    described: tuple[str, ...]
    segment_ids: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.v.shape[0])

    @staticmethod
    def join(parts: Sequence[Moments]) -> Moments:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Moments(np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32), ())
        return Moments(
            np.concatenate([p.v for p in parts]),
            np.concatenate([p.z for p in parts]),
            tuple(d for p in parts for d in p.described),
            tuple(s for p in parts for s in p.segment_ids),
        )


def overlapping(spans: Sequence[tuple[float, float]], start: float | None, end: float | None) -> list[int]:
    """Positions of the spans that overlap [start, end) (all of them without a range)."""
    if start is None and end is None:
        return list(range(len(spans)))
    lo = 0.0 if start is None else start
    hi = math.inf if end is None else end
    if hi <= lo:
        raise InvalidArgumentError(f"Invalid range {lo}-{hi}: the end must come after the start.")
    return [i for i, (s, e) in enumerate(spans) if s < hi and e > lo] or [
        min(range(len(spans)), key=lambda i: abs(spans[i][0] - lo))
    ]


def describe(path: str, start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return path
    return f"{path}@{start or 0:g}-{'' if end is None else f'{end:g}'}"


@dataclass(frozen=True)
class LearnedConcept:
    """A concept as learned (or loaded): its row in the catalog and its classifier."""

    row: ConceptRow
    model: ConceptModel
    report: FitReport | None = None


class ConceptEngine:
    """Learning and scoring concepts over one snapshot with one model."""

    def __init__(self, snapshot: Snapshot, encoder: XClipEncoder, scorer: PromptScorer) -> None:
        self.snapshot = snapshot
        self.encoder = encoder
        self.scorer = scorer
        self.logit_scale = float(encoder.model.logit_scale.detach().exp().item())

    # -- examples --------------------------------------------------------------------------------------

    def from_segments(self, segment_ids: Sequence[int]) -> Moments:
        """Indexed segments by id (`NotFoundError` for an id no live segment has)."""
        if not segment_ids:
            return Moments.join([])
        ids = [int(x) for x in segment_ids]
        rows = self.snapshot.catalog.segments_by_id(ids, self.snapshot.generation)
        missing = [x for x in ids if x not in rows]
        if missing:
            raise NotFoundError(f"No segment with id {missing[0]} in this index")
        v, z = self.snapshot.vectors.gather(np.array(ids, dtype=np.int64))
        return Moments(v, z, tuple(f"segment:{x}" for x in ids), tuple(ids))

    def from_video(self, video_id: int, start: float | None, end: float | None) -> Moments:
        """The segments of an indexed video overlapping [start, end) (the whole video without a range)."""
        segs = self.snapshot.catalog.segments_of_videos([int(video_id)], self.snapshot.generation).get(int(video_id))
        if not segs:
            raise NotFoundError(f"No indexed video with id {video_id}")
        keep = overlapping([(s.start_s, s.end_s) for s in segs], start, end)
        ids = np.array([segs[i].id for i in keep], dtype=np.int64)
        v, z = self.snapshot.vectors.gather(ids)
        return Moments(v, z, (describe(segs[0].path, start, end),), tuple(int(x) for x in ids))

    def indexed_video(self, path: str) -> int | None:
        """The id of the indexed video at `path`, or None (a file outside the index is embedded instead)."""
        row = self.snapshot.catalog.video_at_path(path)
        return row.id if row is not None and row.status == "indexed" else None

    def sample_negatives(self, count: int, exclude: Sequence[int], seed: int = 0) -> Moments:
        """`count` live segments drawn at random (a fixed seed: learning twice gives the same concept)."""
        ids = self.snapshot.catalog.live_segment_ids(self.snapshot.generation)
        if len(exclude):
            ids = np.setdiff1d(ids, np.asarray(exclude, dtype=np.int64))
        if len(ids) > count:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=count, replace=False))
        v, z = self.snapshot.vectors.gather(ids.astype(np.int64))
        return Moments(v, z, (), tuple(int(x) for x in ids))

    # -- learning --------------------------------------------------------------------------------------

    def text_scores(self, text: str, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """X-CLIP's exact prompted score of `text` for each segment."""
        if len(v) == 0:
            return np.zeros(0, np.float32)
        t = self.encoder.encode_texts([text])
        return self.scorer.score(v, z, t)[:, 0]

    def learn(
        self,
        name: str,
        positives: Moments,
        negatives: Moments | None = None,
        *,
        text: str | None = None,
        force_text: bool = False,
        sample: int = DEFAULT_NEGATIVES,
        model_source: str = "",
        model_hash: str = "",
    ) -> LearnedConcept:
        """Fit a concept named `name` (its text defaults to the name: used when X-CLIP knows it)."""
        name = check_name(name)
        if len(positives) == 0:
            raise InvalidArgumentError(
                "No positive examples", hint="Give --example PATH[@START-END] or --example-segment ID."
            )
        drawn = self.sample_negatives(sample, [*positives.segment_ids, *(negatives.segment_ids if negatives else ())])
        neg = Moments.join([negatives, drawn] if negatives is not None else [drawn])
        if len(neg) == 0:
            raise InvalidArgumentError("No negative examples: the index is empty", hint="Index some videos first.")
        text = (text or name).strip()
        pos_s = self.text_scores(text, positives.v, positives.z)
        neg_s = self.text_scores(text, neg.v, neg.z)
        report = fit_concept(
            positives.v,
            neg.v,
            logit_scale=self.logit_scale,
            text=text,
            pos_s=pos_s,
            neg_s=neg_s,
            force_text=force_text,
        )
        examples = positives.described + tuple(f"not {d}" for d in (negatives.described if negatives else ()))
        row = ConceptRow(
            name=name,
            model=report.model.to_json(),
            model_source=model_source,
            model_hash=model_hash,
            method=METHOD,
            text=report.model.text,
            examples=examples,
            positives=len(positives),
            negatives=len(neg),
            held_out_accuracy=report.held_out_accuracy,
            learned_at=now_iso(),
        )
        return LearnedConcept(row, report.model, report)

    # -- scoring ---------------------------------------------------------------------------------------

    def probs(
        self, model: ConceptModel, v: np.ndarray, z: np.ndarray, text_scores: np.ndarray | None = None
    ) -> np.ndarray:
        """The concept's probability for segments (computing its text's scores unless given)."""
        if model.uses_text and text_scores is None:
            assert model.text is not None
            text_scores = self.text_scores(model.text, v, z)
        return model.probs(v, text_scores if model.uses_text else None)

    def stream(self, model: ConceptModel, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, probabilities) of `ids` in chunks of `CHUNK`: bounded memory whatever the index's size."""
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            if model.uses_text:
                v, z = self.snapshot.vectors.gather(chunk)
                yield chunk, self.probs(model, v, z)
            else:
                yield chunk, model.probs(self.snapshot.vectors.gather_v(chunk))

    def top(self, model: ConceptModel, ids: np.ndarray, count: int, per_video: bool) -> list[tuple[float, int]]:
        """The `count` best (probability, segment id), one per video when `per_video`, streaming `ids`.

        Per video, only the current best `count` videos are kept: a video dropped now can come back only with a
        better segment, which is then its best, so the result is exact.
        """
        if not per_video:
            heap: list[tuple[float, int]] = []
            for chunk, p in self.stream(model, ids):
                best = np.argsort(-p, kind="stable")[:count]
                for j in best.tolist():
                    item = (float(p[j]), -int(chunk[j]))
                    if len(heap) < count:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
            return sorted(((s, -neg) for s, neg in heap), key=lambda x: (-x[0], x[1]))
        from .store.layout import read_segment_layout

        layout = read_segment_layout(self.snapshot.catalog.engine, self.snapshot.generation)
        best_of: dict[int, tuple[float, int]] = {}
        for chunk, p in self.stream(model, ids):
            pos = layout.positions(chunk.tolist())
            vids = layout.videos[np.searchsorted(layout.offsets, pos, side="right") - 1]
            order = np.argsort(-p, kind="stable")
            _, first = np.unique(vids[order], return_index=True)  # each video's best segment in this chunk
            for j in order[first].tolist():
                vid, sid = int(vids[j]), int(chunk[j])
                cur = best_of.get(vid)
                if cur is None or (p[j], -sid) > (cur[0], -cur[1]):
                    best_of[vid] = (float(p[j]), sid)
            if len(best_of) > 4 * count:
                best_of = dict(sorted(best_of.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:count])
        return sorted(best_of.values(), key=lambda x: (-x[0], x[1]))[:count]

    def rank(
        self,
        concept: LearnedConcept,
        ids: np.ndarray,
        *,
        top_k: int,
        per_video: bool,
        min_prob: float | None,
        query: str | None = None,
        ranked_by: str = "concept",
    ) -> SearchResults:
        """Moments ranked by the concept's probability, or with `query` by X-CLIP's score fused with it.

        The fused key is ``log P(concept) + exp(logit_scale) · score``: the concept's log-probability plus the
        query's (X-CLIP's retrieval softmax up to a constant); `score` in the hits stays X-CLIP's own.
        """
        check_search_args(top_k, None)
        model = concept.model
        if query is None:
            picked = self.top(model, ids, top_k, per_video)
            if min_prob is not None:
                picked = [p for p in picked if p[0] >= min_prob]
            seg_ids = np.array([s for _, s in picked], dtype=np.int64)
            scores, coarse = self._xclip_scores(concept.row.name, seg_ids)
            probs = np.array([p for p, _ in picked])
            return self._results(seg_ids, probs, scores, coarse, None, ranked_by)
        pool = [s for _, s in self.top(model, ids, FUSION_CANDIDATES, False)]
        pool += self._text_candidates(query, ids)
        seg_ids = np.array(sorted(set(pool)), dtype=np.int64)
        v, z = self.snapshot.vectors.gather(seg_ids)
        probs = self.probs(model, v, z)
        scores, coarse = self._xclip_scores(query, seg_ids, v, z)
        fused = np.log(np.maximum(probs, 1e-12)) + self.logit_scale * scores
        order = np.argsort(-fused, kind="stable")
        if min_prob is not None:
            order = order[probs[order] >= min_prob]
        if per_video:
            order = self._best_per_video(seg_ids, order)
        order = order[:top_k]
        return self._results(seg_ids[order], probs[order], scores[order], coarse[order], fused[order], "text+concept")

    def _text_candidates(self, query: str, ids: np.ndarray) -> list[int]:
        """The first stage of a text search (ANN on cos(v, t)) restricted to `ids`."""
        t = self.encoder.encode_texts([query])[0]
        unit = t / np.linalg.norm(t)
        found = self.snapshot.coarse(unit, FUSION_CANDIDATES, allowed=np.sort(ids))
        return [c.segment_id for c in found]

    def _best_per_video(self, seg_ids: np.ndarray, order: np.ndarray) -> np.ndarray:
        rows = self.snapshot.catalog.segments_by_id(seg_ids.tolist(), self.snapshot.generation)
        seen: set[int] = set()
        keep = []
        for i in order.tolist():
            vid = rows[int(seg_ids[i])].video_id
            if vid not in seen:
                seen.add(vid)
                keep.append(i)
        return np.array(keep, dtype=np.int64)

    def _xclip_scores(
        self, text: str, seg_ids: np.ndarray, v: np.ndarray | None = None, z: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """X-CLIP's exact prompted score of `text` and its first-stage cosine ``cos(v, t)`` for the segments."""
        if len(seg_ids) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        if v is None or z is None:
            v, z = self.snapshot.vectors.gather(seg_ids)
        t = self.encoder.encode_texts([text])
        unit_t = t[0] / np.linalg.norm(t[0])
        unit_v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return self.scorer.score(v, z, t)[:, 0], unit_v @ unit_t

    def _results(
        self,
        seg_ids: np.ndarray,
        probs: np.ndarray,
        scores: np.ndarray,
        coarse: np.ndarray,
        fused: np.ndarray | None,
        ranked_by: str,
    ) -> SearchResults:
        rows = self.snapshot.catalog.segments_by_id(seg_ids.tolist(), self.snapshot.generation)
        hits = []
        for i, sid in enumerate(seg_ids.tolist()):
            r = rows[int(sid)]
            hits.append(
                SearchHit(
                    rank=i + 1,
                    video_id=r.video_id,
                    path=r.path,
                    start=r.start_s,
                    end=r.end_s,
                    score=float(scores[i]),
                    coarse_score=float(coarse[i]),
                    segment_id=int(sid),
                    best_start=r.start_s,
                    best_end=r.end_s,
                    segment_ids=(int(sid),),
                    concept_prob=float(probs[i]),
                    fused_score=None if fused is None else float(fused[i]),
                    ranked_by=ranked_by,
                )
            )
        return SearchResults(hits, generation=self.snapshot.generation, timings={}, candidates=len(seg_ids))


def load_concepts(rows: Sequence[ConceptRow], model_hash: str, where: str) -> dict[str, LearnedConcept]:
    """Stored concepts by name, refusing one learned with another model than the index's."""
    out: dict[str, LearnedConcept] = {}
    for row in rows:
        if row.model_hash != model_hash:
            raise IndexMismatchError(
                f"Concept {row.name!r} was learned with another model ({row.model_source}) than the one that built "
                f"{where}",
                hint=f"Learn it again on this index: xclip-search learn {row.name!r} --example ...",
            )
        out[row.name] = LearnedConcept(row, ConceptModel.from_json(row.model))
    return out


def label_probs(
    labels: Sequence[str],
    scores: np.ndarray,
    v: np.ndarray,
    z: np.ndarray,
    concepts: Mapping[str, LearnedConcept],
    engine: ConceptEngine,
    logit_scale: float,
) -> tuple[np.ndarray, list[bool]]:
    """Tag probabilities (B, L) and which labels name a concept: `xclip_search.concepts.tag_probs` (plain labels:
    X-CLIP's zero-shot softmax; a concept: its own probability; several concepts whose text X-CLIP knows: its
    zero-shot plus their examples as a small correction), each concept's text scored here when not the label."""
    is_concept = [label in concepts for label in labels]
    models = [concepts[label].model if c else None for label, c in zip(labels, is_concept, strict=True)]
    text_scores = [
        engine.text_scores(m.text, v, z) if m is not None and m.text is not None and m.text != label else None
        for label, m in zip(labels, models, strict=True)
    ]
    return tag_probs(scores, models, v, text_scores, logit_scale), is_concept
