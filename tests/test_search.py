"""The query engine with a real (tiny) X-CLIP over synthetic stored segments: exact two-stage ranking, the
rerank against transformers' prompt generator, per-video merging, min-score, filters, whole-index tagging,
query by example, and the commands that expose them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from xclip_search import Index
from xclip_search.cli import cli
from xclip_search.prompting import PromptScorer
from xclip_search.store.writer import IndexWriter
from xclip_search.tagging import Tagger

from .synthetic import Video, clustered_videos, one_faiss_thread, unit, write_videos

__all__ = ["one_faiss_thread"]  # an autouse fixture: imported to apply to this module
QUERY = "a person riding a bike"


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, checkpoint) -> tuple[Path, dict[str, Video]]:  # type: ignore[no-untyped-def]
    """40 background videos plus two crafted ones: 'merge' (three equal middle segments) and 'gap'.

    The crafted segments are the best, second best and worst of 3,000 random (v, Z) pairs by exact score, so the
    test knows the ranking without assuming anything about how the prompts move scores.
    """
    from xclip_search.encoder import XClipEncoder

    identity = checkpoint.identity
    d, n = identity.embed_dim, identity.num_tokens
    t = XClipEncoder(checkpoint).encode_texts([QUERY])
    rng = np.random.default_rng(7)
    pool_v = unit(rng.standard_normal((3000, d)))
    pool_z = rng.standard_normal((3000, n, d)).astype(np.float32)
    order = np.argsort(-PromptScorer(checkpoint.model).score(pool_v, pool_z, t)[:, 0])
    best, second, worst = order[0], order[1], order[-1]
    merge = Video(
        "/vids/crafted/merge.mp4",
        v=pool_v[[worst, best, best, best, worst]],
        z=pool_z[[worst, best, best, best, worst]],
    )
    gap = Video(
        "/vids/crafted/gap.mp4", v=pool_v[[second, second, worst]], z=pool_z[[second, second, worst]], gaps=(1,)
    )
    background = clustered_videos(identity, 40, segments=3, seed=11, prefix="/vids/bg")
    for i, v in enumerate(background):
        v.duration = 5.0 * i
    directory = tmp_path_factory.mktemp("search") / "idx"
    write_videos(directory, identity, [merge, gap, *background])
    scores = PromptScorer(checkpoint.model).score(
        np.concatenate([v.v for v in background]), np.concatenate([v.z for v in background]), t
    )
    assert scores.max() < PromptScorer(checkpoint.model).score(pool_v[[second]], pool_z[[second]], t).min()
    return directory, {"merge": merge, "gap": gap, **{v.path: v for v in background}}


@pytest.fixture()
def index(library: tuple[Path, dict[str, Video]]):  # type: ignore[no-untyped-def]
    with Index.open(library[0], device="cpu") as idx:
        yield idx


def exhaustive(index: Index, query: str) -> tuple[np.ndarray, np.ndarray]:
    ids = index.snapshot.live_ids()
    v, z = index.snapshot.vectors.gather(ids)
    t = index.engine.encoder.encode_texts([query])
    scores = index.engine.scorer.score(v, z, t)[:, 0]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def test_shortcut_equals_transformers_prompt_generator(checkpoint) -> None:  # type: ignore[no-untyped-def]
    """The rerank is transformers' XCLIPPromptGenerator on one text token: equal scores, several texts at once,
    more pairs than one chunk."""
    from xclip_search.encoder import XClipEncoder

    model = checkpoint.model
    d, n = checkpoint.identity.embed_dim, checkpoint.identity.num_tokens
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(700, n, d, generator=g)  # what the prompt generator's own layer norm receives
    z = model.prompts_generator.layernorm(tokens).detach()  # what the index stores
    v = torch.nn.functional.normalize(torch.randn(700, d, generator=g), dim=-1)
    t = torch.from_numpy(XClipEncoder(checkpoint).encode_texts([QUERY, "bikes", "a red circle moving left"]))
    ours = PromptScorer(model).score(v, z, t)
    pg = model.prompts_generator
    with torch.inference_mode():
        ref = torch.stack(
            [
                torch.nn.functional.cosine_similarity(v, t[i] + pg(t[i].expand(700, 1, d), tokens)[:, 0])
                for i in range(3)
            ],
            dim=1,
        )
    diff = np.abs(ours - ref.numpy())
    # float32 rounding on both sides: transformers' own float32 result is 1.5e-5 from float64 on this tiny model.
    assert diff.max() < 3e-5 and np.median(diff) < 1e-6


def test_two_stage_equals_exhaustive_exact_ranking(index: Index) -> None:
    total = len(index.snapshot.live_ids())
    ids, scores = exhaustive(index, QUERY)
    hits = index.search(QUERY, top_k=15, candidates=total, per_video=False)
    assert [h.segment_id for h in hits] == ids[:15].tolist()
    assert np.allclose([h.score for h in hits], scores[:15], atol=1e-6)
    # Coarse scores are the exact first-stage cosines, and the rerank moved something.
    v = index.snapshot.vectors.gather_v(np.array([h.segment_id for h in hits]))
    t = index.engine.encoder.encode_texts([QUERY])[0]
    assert np.allclose([h.coarse_score for h in hits], v @ unit(t), atol=1e-6)
    coarse_order = [
        h.segment_id for h in index.search(QUERY, top_k=15, candidates=total, per_video=False, rerank=False)
    ]
    assert coarse_order != [h.segment_id for h in hits]


def test_ann_index_gives_the_same_ranking_when_it_holds_the_top_k(
    library: tuple[Path, dict[str, Video]],
    checkpoint,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    directory = tmp_path / "ivf"
    shutil.copytree(library[0], directory)
    more = clustered_videos(checkpoint.identity, 300, segments=4, seed=12, prefix="/vids/more")
    write_videos(directory, checkpoint.identity, more, ann="ivfpq")
    with Index.open(directory, device="cpu") as idx:
        assert idx.info()["ann"]["type"] == "ivfpq"
        total = len(idx.snapshot.live_ids())
        ids, scores = exhaustive(idx, QUERY)
        full = idx.search(QUERY, top_k=10, candidates=total, per_video=False)
        assert [h.segment_id for h in full] == ids[:10].tolist()
        small = idx.search(QUERY, top_k=10, candidates=40, per_video=False)
        # Whatever C, a hit's score is its exact score, and hits are ordered by it.
        exact = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        assert all(abs(h.score - exact[h.segment_id]) < 1e-6 for h in small)
        assert [h.score for h in small] == sorted((h.score for h in small), reverse=True)


def test_one_hit_per_video_with_adjacent_matches_merged(index: Index, library: tuple[Path, dict[str, Video]]) -> None:
    videos = library[1]
    merge, gap = videos["merge"], videos["gap"]
    hits = index.search(QUERY, top_k=5)
    assert len({h.video_id for h in hits}) == len(hits) == 5
    first = hits[0]
    assert first.path == merge.path
    assert (first.start, first.end) == (10.0, 40.0)  # segments 1-3 score the same; 0 and 4 do not
    assert first.segment_ids == tuple(merge.ids[1:4]) and first.segment_id == merge.ids[1]
    assert (first.best_start, first.best_end) == (10.0, 20.0)
    by_path = {h.path: h for h in hits}
    assert gap.path in by_path
    assert (by_path[gap.path].start, by_path[gap.path].end) == (0.0, 10.0)  # the equal segment after a gap stays out
    unmerged = index.search(QUERY, top_k=5, merge=False)
    assert (unmerged[0].start, unmerged[0].end) == (10.0, 20.0)
    every = index.search(QUERY, top_k=5, per_video=False)
    assert [h.segment_id for h in every[:3]] == merge.ids[1:4]
    assert all(h.end - h.start == 10.0 for h in every)


def test_segment_layout_matches_the_catalog(index: Index) -> None:
    """The merge's in-memory map holds exactly what the catalog says about every live segment."""
    snap = index.snapshot
    layout = index.engine.layout
    videos = [int(r["id"]) for r in snap.catalog.video_table()]
    per_video = snap.catalog.video_segments(videos, snap.generation)
    assert len(layout) == sum(len(rows) for rows in per_video.values()) == len(snap.live_ids())
    for video in videos:
        lo, hi = layout.span(video)
        rows = per_video.get(video, [])
        assert [
            (int(layout.ids[p]), int(layout.seq[p]), float(layout.start_s[p]), float(layout.end_s[p]))
            for p in range(lo, hi)
        ] == [(int(r["id"]), int(r["seq"]), float(r["start_s"]), float(r["end_s"])) for r in rows]
        assert [layout.position(int(r["id"])) for r in rows] == list(range(lo, hi))
    assert layout.span(10**9) == (0, 0) and layout.position(-5) == -1
    assert layout.positions([-5, int(layout.ids[3])]).tolist() == [-1, 3]
    assert layout.count(videos) == len(layout)


def test_merge_reads_no_catalog_rows_per_query(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the snapshot's layout is loaded, widening hits asks the catalog nothing: same ranges as before."""
    before = index.search(QUERY, top_k=5)
    filtered = index.search(QUERY, top_k=1, where="start>=20")
    catalog = type(index.snapshot.catalog)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the merge asked the catalog for a video's segments")

    for name in ("video_segments", "segments_of_videos", "iter_segments", "iter_segment_rows"):
        monkeypatch.setattr(catalog, name, refuse)
    assert index.search(QUERY, top_k=5) == before
    assert index.search(QUERY, top_k=1, where="start>=20") == filtered
    assert before[0].segment_ids != (before[0].segment_id,)  # the crafted video really was widened


def test_a_one_shot_search_reads_only_its_hits_videos(index: Index) -> None:
    """A fresh reader does not load the whole segment map for one search, and answers as a warmed one does."""
    with Index.open(index.directory) as cold:
        hits = cold.search(QUERY, top_k=5)
        filtered = cold.search(QUERY, top_k=1, where="start>=20")
        assert cold.engine._layout is None  # only the hits' videos were read
        cold.load_model()  # what the server's warm-up does: the whole map, in memory
        assert cold.engine._layout is not None
        assert cold.search(QUERY, top_k=5) == hits
        assert cold.search(QUERY, top_k=1, where="start>=20") == filtered
    assert hits == index.search(QUERY, top_k=5)


def test_merged_ranges_obey_the_filters(index: Index, library: tuple[Path, dict[str, Video]]) -> None:
    """A range widens only over segments the filter keeps: segment-level filters cut it, video-level ones do not."""
    merge = library[1]["merge"]
    late = index.search(QUERY, top_k=1, where="start>=20")[0]
    assert late.path == merge.path and (late.start, late.end) == (20.0, 40.0)  # not 10-40: 10-20 is filtered out
    assert late.segment_ids == tuple(merge.ids[2:4])
    inside = index.search(QUERY, top_k=1, where=["start>=20", "end<=30"])[0]
    assert (inside.start, inside.end) == (20.0, 30.0) and inside.segment_ids == (merge.ids[2],)
    whole = index.search(QUERY, top_k=1, where="path^=/vids/crafted/")[0]
    assert (whole.start, whole.end) == (10.0, 40.0)  # every segment of the video passes: the full range
    example = index.example(whole.video_id, at=25.0)
    near = index.similar(example, top_k=1, include_source=True, where="end<=30")[0]
    assert near.video_id == whole.video_id and near.end <= 30.0


def test_min_score_and_filters(index: Index, library: tuple[Path, dict[str, Video]]) -> None:
    hits = index.search(QUERY, top_k=50)
    cut = hits[3].score
    kept = index.search(QUERY, top_k=50, min_score=cut)
    assert [h.video_id for h in kept] == [h.video_id for h in hits[:4]]
    assert index.search(QUERY, top_k=5, min_score=hits[0].score + 1e-3) == []
    bg = index.search(QUERY, top_k=50, where=["path~/vids/bg/*", "duration>=100"], per_video=False)
    assert bg and all(h.path.startswith("/vids/bg/") for h in bg)
    allowed = {p for p, v in library[1].items() if p.startswith("/vids/bg/") and v.duration >= 100}
    assert {h.path for h in bg} == allowed
    everyone = index.search(QUERY, top_k=50, where=None, per_video=True)
    assert len(everyone) == 42  # 128 segments: the default 100 candidates widen to find 50 videos
    assert index.engine.last_timings["candidates"] == 128
    from xclip_search.filters import SearchFilter

    crafted = index.search(QUERY, top_k=50, where=SearchFilter.parse(path_prefix="/vids/crafted/"))
    assert [h.path for h in crafted] == ["/vids/crafted/merge.mp4", "/vids/crafted/gap.mp4"]


def test_query_by_example(index: Index, library: tuple[Path, dict[str, Video]]) -> None:
    from xclip_search.example import example_from_embedding

    merge = library[1]["merge"]
    video_id = index.search(QUERY, top_k=1)[0].video_id
    example = index.example(video_id, at=25.0)
    assert example.source["start"] == 20.0 and example.source["end"] == 30.0
    assert np.allclose(example.v, merge.v[2], atol=1e-6)
    others = index.similar(example, top_k=5)
    assert others and all(h.video_id != video_id for h in others)
    ids = index.snapshot.live_ids()
    cos = index.snapshot.vectors.gather_v(ids) @ example.v
    assert others[0].score == pytest.approx(
        max(c for i, c in zip(ids, cos, strict=True) if i not in merge.ids), abs=1e-6
    )
    mine = index.similar(example, top_k=3, include_source=True)
    assert mine[0].video_id == video_id and mine[0].score == pytest.approx(1.0, abs=1e-5)
    assert (mine[0].start, mine[0].end) == (10.0, 40.0)
    whole = index.example(video_id)
    assert np.allclose(whole.v, unit(merge.v.mean(axis=0)), atol=1e-6)
    spans = [(0.0, 10.0), (10.0, 20.0)]
    from_file = example_from_embedding(merge.path, spans, merge.v[:2], at=12.0, snapshot=index.snapshot)
    assert from_file.video_ids == (video_id,) and np.allclose(from_file.v, merge.v[1], atol=1e-6)
    with pytest.raises(Exception, match="No indexed video"):
        index.example(10**9)
    with pytest.raises(Exception, match="Invalid time"):
        index.example(video_id, at=999.0)


def test_tag_whole_index_from_stored_vectors_and_save(
    library: tuple[Path, dict[str, Video]],
    tmp_path: Path,
    checkpoint,  # type: ignore[no-untyped-def]
) -> None:
    directory = tmp_path / "tagged"
    shutil.copytree(library[0], directory)
    labels = ["bikes", "a rabbit", "moving left"]
    with Index.open(directory, device="cpu") as idx:
        seen: list[int] = []
        results = list(idx.tag_index(labels, top=1, save=True, on_batch=lambda done: seen.append(len(done))))
        ids = idx.snapshot.live_ids()
        assert sorted(r.segment_id for r in results) == ids.tolist() and sum(seen) == len(ids)
        v, z = idx.snapshot.vectors.gather(ids[:5])
        direct = Tagger(*idx._components()).tag(v, z, labels)
        by_id = {r.segment_id: r for r in results}
        for sid, expected in zip(ids[:5].tolist(), direct, strict=True):
            got = by_id[sid].labels
            assert len(got) == 1 and got[0].label == expected[0].label
            assert got[0].prob == pytest.approx(expected[0].prob, abs=1e-6)
        top_label = by_id[int(ids[0])].labels[0].label
        tagged = {r.segment_id for r in results if r.labels[0].label == top_label}
        hits = idx.search(QUERY, top_k=500, per_video=False, where=f"tag={top_label}")
        assert {h.segment_id for h in hits} == tagged
        # A threshold keeps only confident labels; saving again replaces this vocabulary's labels.
        strict = list(idx.tag_index(labels, min_prob=0.99, save=True))
        kept = {r.segment_id for r in strict if r.labels}
        assert {h.segment_id for h in idx.search(QUERY, top_k=500, per_video=False, where=f"tag={top_label}")} <= kept
        only_bg = list(idx.tag_index(labels, top=2, where=["path^=/vids/bg/"]))
        assert {r.path for r in only_bg} == {p for p in library[1] if p.startswith("/vids/bg/")}


def test_commands_search_similar_tag_info(library: tuple[Path, dict[str, Video]], tmp_path: Path) -> None:
    directory = tmp_path / "cli"
    shutil.copytree(library[0], directory)
    d = str(directory)
    result = run("search", QUERY, "--index", d, "--json", "--top-k", "3", "--filter", "duration>=0", "--glob", "*.mp4")
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert [set(h) for h in data["results"]] == [
        {"rank", "video_id", "path", "start", "end", "score", "coarse_score", "match", "cue", "fused_score"}
    ] * 3
    assert {h["match"] for h in data["results"]} == {"visual"}  # an index without subtitles: X-CLIP alone
    assert data["results"][0]["path"] == "/vids/crafted/merge.mp4" and data["results"][0]["end"] == 40.0
    vid = str(data["results"][0]["video_id"])
    sim = json.loads(run("similar", "--video-id", vid, "--at", "15", "--index", d, "--json").stdout)  # type: ignore[attr-defined]
    assert sim["example"]["video_id"] == int(vid) and all(h["video_id"] != int(vid) for h in sim["results"])
    tagged = run("tag", "--index", d, "--labels", "bikes,rabbit", "--top", "1", "--save", "--json")
    rows = json.loads(tagged.stdout)["results"]  # type: ignore[attr-defined]
    assert len(rows) == 128 and all(set(r) == {"path", "start", "end", "labels"} for r in rows)
    label = rows[0]["labels"][0]["label"]
    only = json.loads(run("search", QUERY, "--index", d, "--json", "--tag", label, "--top-k", "100").stdout)  # type: ignore[attr-defined]
    carrying = [r for r in rows if r["labels"][0]["label"] == label]
    assert 0 < len(carrying) < len(rows)  # the tag filter keeps some segments and leaves others out
    # One hit per video carrying the label, and no other video...
    assert sorted(h["path"] for h in only["results"]) == sorted({r["path"] for r in carrying})
    for h in only["results"]:
        # ...whose merged range widens only over segments that carry the label too.
        inside = [r for r in rows if r["path"] == h["path"] and h["start"] <= r["start"] and r["end"] <= h["end"]]
        assert inside and all(r["labels"][0]["label"] == label for r in inside), h
    human = run("search", QUERY, "--index", d, "--min-score", "2")
    assert human.stdout.strip() == "No results."  # type: ignore[attr-defined]
    info = run("info", "--index", d)
    assert "flat (exact)" in info.stdout and "in memory" in info.stdout  # type: ignore[attr-defined]
    bad = CliRunner().invoke(cli, ["similar", "--index", d])
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: Pass exactly one of EXAMPLE")


def test_search_sees_segments_committed_after_the_ann(
    library: tuple[Path, dict[str, Video]], checkpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "fresh"
    shutil.copytree(library[0], directory)
    merge = library[1]["merge"]
    late = Video("/vids/late.mp4", v=merge.v[1:2].copy(), z=merge.z[1:2].copy())
    write_videos(directory, checkpoint.identity, [late], ann=None)
    with Index.open(directory, device="cpu") as idx:
        assert idx.info()["ann"]["tail_segments"] == 1
        paths = [h.path for h in idx.search(QUERY, top_k=3)]
        assert "/vids/late.mp4" in paths[:2]
    with IndexWriter(directory, checkpoint.identity) as w:
        w.remove(["/vids/late.mp4"])
    with Index.open(directory, device="cpu") as idx:
        assert "/vids/late.mp4" not in [h.path for h in idx.search(QUERY, top_k=50)]


def test_similar_to_a_video_file_embeds_it_as_the_index_does(tmp_path: Path, tiny_ckpt: Path) -> None:
    from indexer.pipeline import IndexOptions, run_index

    from .conftest import REAL_CLIP

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    idx = tmp_path / "idx"
    run_index([lib], idx, model=str(tiny_ckpt), options=IndexOptions(segment_seconds=2, workers=1))
    clip = str(lib / "bikes.mp4")
    args = ["similar", clip, "--index", str(idx), "--at", "3", "--segment-seconds", "2", "--json"]
    data = json.loads(run(*args, "--include-source", "--all-segments").stdout)  # type: ignore[attr-defined]
    # Cut as the index cut it (shots, the default): 3 s falls in the shot between the cuts at frames 30 and 76.
    assert data["example"] == {"video_id": 1, "path": clip, "start": 1.2, "end": 3.04}
    first = data["results"][0]
    assert (first["path"], first["start"], first["end"]) == (clip, 1.2, 3.04)
    assert first["score"] == pytest.approx(1.0, abs=1e-5)  # the same frames, pixels and model as the index
    assert json.loads(run(*args).stdout)["results"] == []  # type: ignore[attr-defined]  # only the source is indexed
