"""Scores are X-CLIP's scores: every path of the product against `XCLIPModel.forward` on the same frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.extract import ExtractSpec, extract
from indexer.pipeline import IndexOptions, run_index
from xclip_search import Index
from xclip_search.encoder import XClipEncoder
from xclip_search.prompting import PromptScorer
from xclip_search.sampling import sample_frame_indices
from xclip_search.tagging import Tagger

from .conftest import REAL_CLIP, REAL_CLIP_HD
from .reference import Reference

TEXTS = ["a person riding a bike", "bikes", "a red circle moving left", "an animated rabbit in a forest at dawn"]
TOL = 1e-5


@pytest.fixture(scope="module")
def ref(tiny_ckpt: Path) -> Reference:
    return Reference(tiny_ckpt)


@pytest.mark.parametrize("clip", [REAL_CLIP, REAL_CLIP_HD])
def test_extracted_frames_and_pixels_equal_the_reference(clip: Path, checkpoint, ref: Reference) -> None:
    spec = ExtractSpec(num_frames=checkpoint.num_frames, pixels=checkpoint.pixels, segment_seconds=0)
    ext = extract(str(clip), spec)
    assert ext.decoder == "decord"
    assert len(ext.segments) == 1
    seg = ext.segments[0]
    assert (seg.frame_start, seg.frame_end) == (0, ext.info.num_frames)
    frames = ref.frames(clip)
    assert np.array_equal(ext.pixels[0], ref.pixels(frames)[0].numpy())


def test_segment_pixels_equal_the_reference_for_each_window(checkpoint, ref: Reference) -> None:
    spec = ExtractSpec(num_frames=checkpoint.num_frames, pixels=checkpoint.pixels, segment_seconds=3)
    ext = extract(str(REAL_CLIP), spec)
    assert len(ext.segments) == 3  # 250 frames at 25 fps: 75 + 75 + 100 (the short tail merges)
    for k, seg in enumerate(ext.segments):
        frames = ref.frames(REAL_CLIP, seg.frame_start, seg.frame_end)
        assert np.array_equal(ext.pixels[k], ref.pixels(frames)[0].numpy())
        assert sample_frame_indices(seg.frame_start, seg.frame_end, 8)[0] >= seg.frame_start


def test_prompted_scores_equal_forward(checkpoint, ref: Reference, generated_videos: dict[str, Path]) -> None:
    encoder = XClipEncoder(checkpoint)
    scorer = PromptScorer(checkpoint.model)
    clips = [REAL_CLIP, REAL_CLIP_HD, *generated_videos.values()]
    worst = 0.0
    for clip in clips:
        frames = ref.frames(clip)
        emb = encoder.encode_videos(ref.pixels(frames).numpy())
        ours = scorer.score(emb.v, emb.z, encoder.encode_texts(TEXTS))[0]
        expected = ref.scores(frames, TEXTS)
        worst = max(worst, float(np.abs(ours - expected).max()))
    assert worst < TOL, worst
    # The prompts must matter for this test to mean anything: exact and first-stage scores differ.
    frames = ref.frames(REAL_CLIP)
    assert abs(ref.scores(frames, TEXTS[:1])[0] - ref.coarse(frames, TEXTS[0])) > 1e-3


def test_single_query_is_not_padded_and_equals_batched(checkpoint) -> None:
    encoder = XClipEncoder(checkpoint)
    single = np.stack([encoder._encode_uncached([t])[0] for t in TEXTS])
    batched = encoder._encode_uncached(TEXTS)
    assert np.abs(single - batched).max() < 1e-5
    assert checkpoint.tokenizer(TEXTS[1], return_tensors="pt")["input_ids"].shape[1] < 77


def test_search_and_tag_scores_equal_forward(tmp_path: Path, tiny_ckpt: Path, ref: Reference, library: Path) -> None:
    report = run_index(
        [library], tmp_path / "idx", model=str(tiny_ckpt), options=IndexOptions(segment_seconds=0, workers=1)
    )
    assert report.to_dict()["indexed"] == 5
    query = TEXTS[0]
    with Index.open(tmp_path / "idx") as index:
        hits = index.search(query, top_k=10, per_video=False)
        assert len(hits) == 5
        expected = {}
        for hit in hits:
            frames = ref.frames(Path(hit.path))
            expected[hit.path] = float(ref.scores(frames, [query])[0])
            assert abs(hit.score - expected[hit.path]) < TOL
            assert abs(hit.coarse_score - ref.coarse(frames, query)) < TOL
            assert (hit.start, hit.end) == (0.0, pytest.approx(hit.end))
        assert [h.path for h in hits] == sorted(expected, key=lambda p: -expected[p])

        labels = ["bikes", "a rabbit", "moving left"]
        frames = ref.frames(REAL_CLIP)
        tagger = Tagger(*index._components())
        spec = ExtractSpec(num_frames=8, pixels=index.checkpoint.pixels, segment_seconds=0)
        emb = tagger.encoder.encode_videos(extract(str(REAL_CLIP), spec).pixels)
        tags = tagger.tag(emb.v, emb.z, labels)[0]
        probs = dict(zip(labels, ref.probs(frames, labels), strict=True))
        scores = dict(zip(labels, ref.scores(frames, labels), strict=True))
        for t in tags:
            assert abs(t.prob - probs[t.label]) < TOL
            assert abs(t.score - scores[t.label]) < TOL
        assert [t.prob for t in tags] == sorted((t.prob for t in tags), reverse=True)
