"""`Index`: the Python API over one index directory (search, tag, info). The command line is a shell over it.

    from xclip_search import Index
    with Index.open("my-index") as index:
        for hit in index.search("a dog catching a frisbee", top_k=5):
            print(hit.path, hit.start, hit.end, hit.score)

The model that built the index is loaded lazily on the first call that needs it, from what the manifest
records (hub id and revision, local directory, or the bundled demo model); a checkpoint whose configuration
differs from the recorded one is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from .defaults import default_index_dir
from .errors import IndexMismatchError, InvalidArgumentError, NotFoundError
from .filters import SearchFilter
from .results import (
    DEFAULT_CANDIDATES,
    MAX_CANDIDATES,
    MAX_TOP_K,
    SearchHit,
    SearchResults,
    check_match,
    check_min_score,
    check_query,
    check_search_args,
)
from .store import compaction
from .store.catalog import Catalog, ConceptRow, RunRoots, SegmentRow, VideoListing, VideoRow
from .store.cues import Cue
from .store.manifest import MANIFEST_NAME, read_manifest
from .store.records import Shot, group_shots
from .store.segmentation import RecordedSegmentation, read_segmentation
from .store.snapshot import Snapshot
from .store.thumbshards import read_stored
from .store.vectors import VectorStore
from .thumbnails import row_frame
from .webvtt import webvtt

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .example import Example
    from .export import ExportReport
    from .learning import ConceptEngine, LearnedConcept, Moments
    from .search import SearchEngine
    from .tagging import LabelScore, Prober, SegmentTags

    Where = SearchFilter | str | Iterable[str] | None


class Index:
    """A published index opened for reading; see the module docstring."""

    def __init__(
        self, directory: Path, snapshot: Snapshot, *, device: str | None = None, model: str | None = None
    ) -> None:
        self.directory = directory
        self.snapshot = snapshot
        self._device = device
        self._model_override = model
        self._checkpoint: Checkpoint | None = None
        self._engine: Any = None
        self._tagger: Any = None
        self._stamp: tuple[int, int, int] | None = None  # the first refresh reads the manifest

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        model: str | None = None,
    ) -> Index:
        """Open the latest published generation of the index at `directory` (default: `default_index_dir`).

        `model` overrides where the model is loaded from (for an index whose local checkpoint moved); it must
        have the recorded configuration.
        """
        path = Path(directory) if directory is not None else default_index_dir()
        path = path.expanduser().resolve()
        return cls(path, Snapshot.open(path), device=device, model=model)

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.snapshot.catalog.close()

    @property
    def catalog(self) -> Catalog:
        return self.snapshot.catalog

    @property
    def generation(self) -> int:
        return self.snapshot.generation

    @property
    def segmentation(self) -> RecordedSegmentation:
        """How this index cut its videos (`tag` and `similar --at` cut new files the same way)."""
        return read_segmentation(self.catalog)

    def check_readable(self) -> None:
        """Raise the store's error (missing or damaged manifest, damaged catalog) if a new reader could not open
        this index now; the snapshot already open keeps answering either way (the server's health check)."""
        read_manifest(self.directory)
        self.catalog.latest_generation()

    def refresh(self) -> bool:
        """Move to the newest published generation; returns True if there was one.

        The manifest file's identity (inode, mtime, size) is compared first, so a call when nothing was published
        costs one ``stat``; a call in progress keeps reading the snapshot it started with.
        """
        stamp = _manifest_stamp(self.directory)
        if stamp is not None and stamp == self._stamp:
            return False
        latest = Snapshot.open(self.directory, catalog=self.catalog)
        self._stamp = stamp
        if latest.generation == self.snapshot.generation and latest.manifest == self.snapshot.manifest:
            return False
        self.snapshot = latest
        self._engine = None
        return True

    # -- model -------------------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint:
        if self._checkpoint is None:
            recorded = self.snapshot.manifest.model
            source = self._model_override or recorded.source
            ckpt = load_checkpoint(source, revision=recorded.revision, device=self._device)
            if ckpt.identity.config_hash != recorded.config_hash:
                raise IndexMismatchError(
                    f"{source} is not the model that built {self.directory} (configuration differs)",
                    hint=f"The index was built with {recorded.source}.",
                )
            self._checkpoint = ckpt
        return self._checkpoint

    @property
    def model_loaded(self) -> bool:
        return self._tagger is not None

    def load_model(self) -> None:
        """Load the model and the snapshot's segment layout now (the first search would otherwise pay for them)."""
        self._components()
        _ = self.engine.layout

    def _components(self) -> tuple[Any, Any]:
        from .encoder import XClipEncoder
        from .prompting import PromptScorer

        if self._tagger is None:
            from .tagging import Tagger

            encoder = XClipEncoder(self.checkpoint)
            self._tagger = Tagger(encoder, PromptScorer(self.checkpoint.model))
        return self._tagger.encoder, self._tagger.scorer

    # -- operations --------------------------------------------------------------------------------------

    @property
    def engine(self) -> SearchEngine:
        """The search engine over the current snapshot (built on first use)."""
        return self._engine_at(self.snapshot)

    def _engine_at(self, snapshot: Snapshot) -> SearchEngine:
        """The engine over `snapshot`: a call reads the snapshot it started with even if `refresh` moves on."""
        from .search import SearchEngine

        encoder, scorer = self._components()
        engine: SearchEngine | None = self._engine
        if engine is None or engine.snapshot is not snapshot:
            engine = SearchEngine(snapshot, encoder, scorer)
            self._engine = engine
        return engine

    def search(
        self,
        query: str,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
        where: Where = None,
        min_score: float | None = None,
        merge: bool = True,
        match: str | None = None,
    ) -> SearchResults:
        """Ranked `SearchHit`s for a text query; see `xclip_search.search.SearchEngine.search`.

        `where` takes filter strings such as ``"duration>=30"`` or a `xclip_search.filters.SearchFilter`. The
        arguments are checked before the model loads. The result is a list that also carries the generation it
        read and per-stage timings (`xclip_search.results.SearchResults`). `match` chooses what is matched:
        ``visual`` (X-CLIP), ``speech`` (subtitles and transcripts), ``both`` (fused; see `xclip_search.fusion`);
        by default both when the index holds any cue.
        """
        check_query(query)
        check_search_args(top_k, candidates)
        check_min_score(min_score)
        check_match(match)
        snapshot = self.snapshot
        where = self._checked_filter(where)
        return self._engine_at(snapshot).search(
            query,
            top_k=top_k,
            candidates=candidates,
            rerank=rerank,
            per_video=per_video,
            where=where,
            min_score=min_score,
            merge=merge,
            match=match,
        )

    def example(self, video_id: int, *, at: float | None = None) -> Example:
        """An indexed video (or its segment at `at` seconds) as a query-by-example."""
        from .example import example_from_index

        return example_from_index(self.snapshot, video_id, at)

    def example_segment(self, segment_id: int) -> Example:
        """An indexed segment as a query-by-example (its own ``v``); its video is the example's source."""
        from .example import example_from_segment

        return example_from_segment(self.snapshot, segment_id)

    def similar(
        self,
        example: Example,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        per_video: bool = True,
        where: Where = None,
        min_score: float | None = None,
        include_source: bool = False,
        merge: bool = True,
    ) -> SearchResults:
        """Segments whose video embedding is closest to the example's (``cos(v_example, v)``).

        The example's own video is left out unless `include_source`.
        """
        check_search_args(top_k, candidates)
        check_min_score(min_score)
        snapshot = self.snapshot
        where = self._checked_filter(where)
        return self._engine_at(snapshot).similar(
            example.v,
            top_k=top_k,
            candidates=candidates,
            per_video=per_video,
            where=where,
            min_score=min_score,
            exclude_videos=() if include_source else example.video_ids,
            merge=merge,
        )

    def _checked_filter(self, where: Where) -> SearchFilter:
        """Parse and check a filter before any model loads, so a bad filter fails in milliseconds."""
        from .filters import coerce_filter, no_saved_tags

        flt = coerce_filter(where)
        if flt.uses_tags and not self.catalog.has_tags():
            raise no_saved_tags()
        return flt

    def tag_embeddings(
        self,
        v: np.ndarray,
        z: np.ndarray,
        labels: Sequence[str],
        *,
        top: int | None = None,
        min_prob: float | None = None,
    ) -> list[list[LabelScore]]:
        """Tag freshly encoded segments (``v``, ``Z``) with this index's model; labels naming learned concepts
        are scored by them (`learn`)."""
        self._components()
        prober = self._concept_prober(labels)
        return list(self._tagger.tag(v, z, labels, top=top, min_prob=min_prob, prober=prober))

    @staticmethod
    def check_labels(labels: Sequence[str]) -> list[str]:
        """Labels stripped and de-duplicated; none, or too many, is an `InvalidArgumentError`."""
        from .tagging import clean_labels

        return clean_labels(labels)

    @staticmethod
    def model_threads() -> int:
        """Threads one model operation may use in this process (torch's intra-op threads; all cores by default)."""
        import torch

        return int(torch.get_num_threads())

    @staticmethod
    def set_model_threads(threads: int) -> None:
        """Set `model_threads` (process-wide). A server runs bulk tagging on one thread and searches on all of
        them: on a busy machine, a thread team waiting at each operation's barrier for a thread the OS has
        descheduled makes the work many times slower than one thread would be."""
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(max(1, threads))

    def warm_texts(self, texts: Sequence[str]) -> None:
        """Encode `texts` into the model's cache of recent text embeddings now, so that a later `search` or
        `tag_index` with them skips the text encoder (the server encodes a tagging request's labels this way, a
        few at a time, so that no single call holds the model for long)."""
        encoder, _scorer = self._components()
        encoder.encode_texts(list(texts))

    def tag_index(
        self,
        labels: Sequence[str],
        *,
        top: int | None = None,
        min_prob: float | None = None,
        where: Where = None,
        save: bool = False,
        on_batch: Callable[[list[SegmentTags]], None] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> Iterator[SegmentTags]:
        """Tag every indexed segment (or those `where` keeps) from the stored ``v``/``Z``, decoding nothing.

        Segments come in id order; `offset` and `limit` take one page of them (`count_segments` is the total).
        With `save`, the labels kept (`top`, `min_prob`) are written to the catalog's tags table, replacing
        this vocabulary's earlier labels on the same segments, so ``search --tag LABEL`` can filter on them.
        """

        from .tagging import check_selection, clean_labels

        vocabulary = clean_labels(labels)
        check_selection(top, min_prob)
        flt = self._checked_filter(where)
        snapshot = self.snapshot
        self._components()
        prober = self._concept_prober(vocabulary)

        def batch_done(done: list[SegmentTags]) -> None:
            if save:
                rows = [(s.segment_id, x.label, x.prob, x.score) for s in done for x in s.labels]
                self.catalog.save_tags(vocabulary, [s.segment_id for s in done], rows)
            if on_batch is not None:
                on_batch(done)

        return self._tagger.tag_index(
            snapshot,
            vocabulary,
            top=top,
            min_prob=min_prob,
            where=flt or None,
            on_batch=batch_done,
            offset=offset,
            limit=limit,
            prober=prober,
        )

    # -- concepts (labels learned from examples; see xclip_search.learning) -------------------------------

    def _concept_engine(self) -> ConceptEngine:
        from .learning import ConceptEngine

        encoder, scorer = self._components()
        return ConceptEngine(self.snapshot, encoder, scorer)

    def _concept_prober(self, labels: Sequence[str]) -> Prober | None:
        """Scores for the labels that name learned concepts (None when none does: zero-shot exactly as before)."""
        from .learning import label_probs

        found = self.learned_concepts(labels)
        if not found:
            return None
        engine = self._concept_engine()
        return lambda lab, scores, v, z: label_probs(lab, scores, v, z, found, engine, engine.logit_scale)

    def concepts(self) -> list[ConceptRow]:
        """The concepts learned on this index, by name."""
        return self.catalog.concept_rows()

    def learned_concepts(self, names: Sequence[str] | None = None) -> dict[str, LearnedConcept]:
        """Stored concepts (those among `names`), checked to be learned with this index's model."""
        from .learning import load_concepts

        rows = self.catalog.concept_rows(None if names is None else [n.strip() for n in names])
        return load_concepts(rows, self.snapshot.manifest.model.config_hash, str(self.directory))

    def concept(self, name: str) -> LearnedConcept:
        """One learned concept; `NotFoundError` if none has that name."""
        found = self.learned_concepts([name]).get(name.strip())
        if found is None:
            raise NotFoundError(
                f"No concept named {name.strip()!r} in this index", hint="List them: xclip-search concepts"
            )
        return found

    def moments_of_segments(self, segment_ids: Sequence[int]) -> Moments:
        """Indexed segments as examples (their stored ``v`` and ``Z``)."""
        return self._concept_engine().from_segments(segment_ids)

    def moments_at(self, path: str, start: float | None = None, end: float | None = None) -> Moments | None:
        """The segments of the indexed file at `path` overlapping [start, end), or None if it is not indexed."""
        engine = self._concept_engine()
        video = engine.indexed_video(os.path.abspath(os.path.expanduser(path)))
        return None if video is None else engine.from_video(video, start, end)

    @staticmethod
    def moments_of_embedding(
        path: str,
        spans: Sequence[tuple[float, float]],
        v: np.ndarray,
        z: np.ndarray,
        start: float | None,
        end: float | None,
    ) -> Moments:
        """A file embedded as the index would (`indexer.embed.embed_files`): its segments overlapping the range."""
        from .learning import Moments, describe, overlapping

        keep = overlapping(list(spans), start, end)
        return Moments(np.asarray(v)[keep], np.asarray(z)[keep], (describe(path, start, end),))

    def learn(
        self,
        name: str,
        positives: Sequence[Moments],
        negatives: Sequence[Moments] = (),
        *,
        text: str | None = None,
        force_text: bool = False,
        save: bool = True,
    ) -> LearnedConcept:
        """Learn (or relearn) concept `name` from example moments; with `save` it is stored in the catalog and
        every label naming it is scored by it from then on. Negatives default to a sample of the index."""
        from .learning import Moments

        engine = self._concept_engine()
        recorded = self.snapshot.manifest.model
        learned = engine.learn(
            name,
            Moments.join(positives),
            Moments.join(negatives) if negatives else None,
            text=text,
            force_text=force_text,
            model_source=recorded.source,
            model_hash=recorded.config_hash,
        )
        if save:
            self.catalog.save_concept(learned.row)
        return learned

    def forget(self, name: str) -> None:
        """Remove a learned concept; `NotFoundError` if none has that name."""
        if not self.catalog.forget_concept(name.strip()):
            raise NotFoundError(
                f"No concept named {name.strip()!r} in this index", hint="List them: xclip-search concepts"
            )

    def search_concept(
        self,
        concept: str | LearnedConcept,
        *,
        query: str | None = None,
        top_k: int = 10,
        per_video: bool = True,
        where: Where = None,
        min_prob: float | None = None,
    ) -> SearchResults:
        """Moments ranked by a concept's probability (every live segment `where` keeps, streamed), or with
        `query` by X-CLIP's score for it fused with the concept (``log P + exp(logit_scale) · score``)."""
        check_search_args(top_k, None)
        if query is not None:
            check_query(query)
        if min_prob is not None and not 0.0 <= min_prob <= 1.0:
            raise InvalidArgumentError(f"Invalid min-prob ({min_prob}). It must be between 0 and 1.")
        learned = self.concept(concept) if isinstance(concept, str) else concept
        flt = self._checked_filter(where)
        ids = (
            self.catalog.segment_ids_where(self.snapshot.generation, flt.clause())
            if flt
            else self.catalog.live_segment_ids(self.snapshot.generation)
        )
        return self._concept_engine().rank(
            learned, np.asarray(ids, np.int64), top_k=top_k, per_video=per_video, min_prob=min_prob, query=query
        )

    def refine(
        self,
        query: str,
        positives: Sequence[int],
        negatives: Sequence[int] = (),
        *,
        top_k: int = 10,
        per_video: bool = True,
        where: Where = None,
    ) -> SearchResults:
        """A text search refined by feedback (segments marked up and down): a concept learned on the spot from
        them, with the query's own X-CLIP score as an input, ranks the index (`save_feedback` keeps it)."""
        check_query(query)
        learned = self._feedback_concept(query, positives, negatives, name="feedback")
        from dataclasses import replace

        results = self.search_concept(learned, top_k=top_k, per_video=per_video, where=where)
        return SearchResults(
            [replace(h, ranked_by="feedback") for h in results],
            generation=results.generation,
            timings=results.timings,
            candidates=results.candidates,
        )

    def save_feedback(
        self, name: str, query: str, positives: Sequence[int], negatives: Sequence[int] = ()
    ) -> LearnedConcept:
        """Store the concept a feedback search learned (`refine`) under `name`."""
        learned = self._feedback_concept(query, positives, negatives, name=name)
        self.catalog.save_concept(learned.row)
        return learned

    def _feedback_concept(
        self, query: str, positives: Sequence[int], negatives: Sequence[int], name: str
    ) -> LearnedConcept:
        if not positives:
            raise InvalidArgumentError("Mark at least one result as matching (thumbs up)")
        neg = [self.moments_of_segments(negatives)] if negatives else []
        return self.learn(name, [self.moments_of_segments(positives)], neg, text=query, force_text=True, save=False)

    def export_parquet(
        self,
        out_dir: str | os.PathLike[str],
        *,
        include_z: bool = True,
        where: Where = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> ExportReport:
        """Write segments, videos, embeddings and tags as Parquet (see `xclip_search.export`)."""
        from .export import export_parquet
        from .filters import coerce_filter

        flt = coerce_filter(where)
        return export_parquet(self.snapshot, out_dir, include_z=include_z, where=flt or None, on_progress=on_progress)

    def info(self) -> dict[str, Any]:
        """Counts, model, ANN type and sizes of the published generation."""
        m = self.snapshot.manifest
        vector_bytes = (
            sum(p.stat().st_size for p in (self.directory / "vectors").glob("*.npy") if p.is_file())
            if (self.directory / "vectors").is_dir()
            else 0
        )
        catalog_bytes = (
            self.catalog.size_bytes()
            if self.catalog.shared
            else sum(p.stat().st_size for p in self.directory.glob("catalog.sqlite*") if p.is_file())
        )
        ann_bytes = (
            (self.directory / m.ann.file).stat().st_size if m.ann and (self.directory / m.ann.file).exists() else 0
        )
        statuses = self.catalog.status_counts()
        last_run = self.catalog.last_run()
        decoders = self.catalog.get_meta("decoders")  # recorded by the indexer (indexer.ingest) as files commit
        return {
            "index": str(self.directory),
            "generation": m.generation,
            "model": m.model.to_dict(),
            "decoders": json.loads(decoders) if decoders else [],
            "videos": {
                "indexed": statuses.get("indexed", 0),
                "failed": statuses.get("failed", 0),
                "skipped": statuses.get("skipped", 0),
                "removed": statuses.get("removed", 0),
            },
            "segments": self.catalog.live_segment_count(m.generation),
            "cues": self.catalog.cue_count(),  # subtitle and transcript lines: search matches them when any
            "segmentation": {**self.segmentation.settings.to_dict(), "recorded": self.segmentation.recorded},
            "ann": None
            if m.ann is None
            else {
                "type": m.ann.kind,
                "count": m.ann.count,
                "generation": m.ann.generation,
                "bytes": ann_bytes,
                "memory_bytes": int(m.ann.params.get("memory_bytes", ann_bytes)),
                "params": {k: v for k, v in m.ann.params.items() if k not in ("memory_bytes", "reason", "build")},
                "reason": m.ann.params.get("reason"),
                # How it was built (kind, trained on N of M vectors, chunks, seconds); absent before this existed.
                "build": m.ann.params.get("build"),
                "tail_segments": sum(s.count for s in m.shards if s.generation > m.ann.generation),
            },
            "bytes": {
                "vectors": vector_bytes,
                "catalog": catalog_bytes,
                "ann": ann_bytes,
                "total": vector_bytes + catalog_bytes + ann_bytes,
            },
            "shards": len(m.shards),
            # Live and dead vector rows, small shards and what a compaction would reclaim (`store.compaction`).
            "compaction": compaction.stats(
                m, self.catalog, VectorStore(self.directory), compaction.CompactionPolicy()
            ).to_dict(),
            "catalog": {"backend": self.catalog.engine.dialect.name, "url": self.catalog.location.display},
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "last_run": None
            if last_run is None
            else {k: last_run[k] for k in ("id", "started_at", "finished_at", "status")},
        }

    # -- catalog reads (typed records; `generation` defaults to the current snapshot's) -------------------

    def _generation(self, generation: int | None) -> int:
        return self.snapshot.generation if generation is None else generation

    def video(self, video_id: int) -> VideoRow:
        """One video's catalog row (any status); `NotFoundError` if the id names none."""
        row = self.catalog.video(video_id)
        if row is None:
            raise NotFoundError(f"No video with id {video_id} in this index")
        return row

    def videos(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        offset: int = 0,
        limit: int = 100,
        generation: int | None = None,
    ) -> tuple[int, list[VideoListing]]:
        """(total, page) of the videos ordered by path, with their live segment counts; `name` is a substring."""
        return self.catalog.list_videos(
            self._generation(generation), status=status, name=name, offset=offset, limit=limit
        )

    def segments_of(self, video_id: int, *, generation: int | None = None) -> list[SegmentRow]:
        """The live segments of one video in time order (empty if it has none)."""
        return self.catalog.segments_of_videos([video_id], self._generation(generation)).get(int(video_id), [])

    def shots_of(self, video_id: int, *, generation: int | None = None) -> list[Shot]:
        """The live segments of one video grouped into shots, in time order (see `Shot`; empty if none)."""
        return group_shots(self.segments_of(video_id, generation=generation))

    def segment(self, segment_id: int, *, generation: int | None = None) -> SegmentRow:
        """One live segment; `NotFoundError` if the id names none in that generation."""
        row = self.catalog.segment(segment_id, self._generation(generation))
        if row is None:
            raise NotFoundError(f"No segment with id {segment_id} in this index")
        return row

    def count_segments(self, where: Where = None, *, generation: int | None = None) -> int:
        """How many live segments `where` keeps (all of them without a filter)."""
        flt = self._checked_filter(where)
        return self.catalog.count_segments_where(self._generation(generation), flt.clause())

    def cues_of(self, video_id: int) -> list[Cue]:
        """Every cue of one video (subtitles, transcript) in time order; `NotFoundError` if the id names none."""
        self.video(video_id)
        return [c.cue for c in self.catalog.cues_of(video_id)]

    def subtitles_vtt(self, video_id: int) -> str:
        """One video's cues as a WebVTT document (the page's player shows it as subtitles)."""
        return webvtt(self.cues_of(video_id))

    def recorded_roots(self) -> list[RunRoots]:
        """The roots each indexing run recorded, with the paths it indexed (to resolve relative roots)."""
        return self.catalog.run_roots()

    def failed_videos(self) -> list[VideoRow]:
        """Files whose last attempt failed or was skipped (`VideoRow.reason` says why), by path."""
        return self.catalog.failed_videos()

    def failures(self) -> list[dict[str, Any]]:
        """Files whose last attempt failed or was skipped, with the reason (as dicts; see `failed_videos`)."""
        return self.catalog.failures()


def _manifest_stamp(directory: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(directory / MANIFEST_NAME)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# What the faces (command line, server) need besides `Index`, so they import nothing from the engine or the store.


def stored_thumbnail(index_dir: Path, segment: SegmentRow) -> bytes | None:
    """The JPEG thumbnail stored for `segment` when its shard was written, or None (the server then decodes one)."""
    return read_stored(Path(index_dir), segment.shard, segment.row)


__all__ = [
    "DEFAULT_CANDIDATES",
    "MAX_CANDIDATES",
    "MAX_TOP_K",
    "ConceptRow",
    "Index",
    "RunRoots",
    "SearchFilter",
    "SearchHit",
    "SearchResults",
    "SegmentRow",
    "Shot",
    "VideoListing",
    "VideoRow",
    "row_frame",
    "stored_thumbnail",
]
