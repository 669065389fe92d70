"""Concepts: labels learned from a few examples, on the demo model (whose ``v`` means something).

A small library of demo clips: four invented words, each a colour + shape + motion (4 indexed examples and 5
held-out files outside the index each), plus random clips. The held-out files are tagged through the real
``tag PATH --index`` path (embedded as the index would), so the floor at k = 4 checks the product, not a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from xclip_search import Index
from xclip_search.cli import cli
from xclip_search.concepts import ConceptModel, calibration, fit_concept
from xclip_search.demo.clips import compose_spec, make_clip, render_clip, write_mp4
from xclip_search.store.catalog import Catalog, ConceptRow
from xclip_search.store.location import CatalogLocation

CONCEPTS = {
    "blicket": ("red", "circle", "moving left"),
    "fep": ("green", "triangle", "growing"),
    "zorp": ("yellow", "square", "blinking"),
    "wug": ("blue", "circle", "moving left"),
}
K = 4
HELD_OUT = 5


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from indexer import IndexOptions, run_index

    root = tmp_path_factory.mktemp("concepts")
    (root / "lib").mkdir()
    (root / "new").mkdir()
    rng = np.random.default_rng(3)
    for name, phrase in CONCEPTS.items():
        for i in range(K + HELD_OUT):
            folder = "lib" if i < K else "new"
            write_mp4(root / folder / f"{name}{i}.mp4", render_clip(compose_spec(rng, [phrase])), 12.0)
    for i in range(16):
        write_mp4(root / "lib" / f"random{i:02d}.mp4", make_clip(rng).frames, 12.0)
    run_index([str(root / "lib")], root / "idx", model="demo", options=IndexOptions(segment_seconds=0, workers=0))
    return root


@pytest.fixture(scope="module")
def learned(demo_lib: Path) -> Path:
    """Every word learned from its K indexed examples (through the command line)."""
    for name in CONCEPTS:
        examples = [a for i in range(K) for a in ("--example", str(demo_lib / "lib" / f"{name}{i}.mp4"))]
        res = run("learn", name, "--index", str(demo_lib / "idx"), *examples, "--json")
        assert res.exit_code == 0, res.output
        got = json.loads(res.output)["learned"]
        assert got["positives"] == K and got["text"] is None  # an invented word: X-CLIP's score is no input
    return demo_lib


def test_held_out_tag_accuracy_at_four_examples(learned: Path) -> None:
    """The Done-when floor: held-out files tagged with the invented words, >= 0.9 at k = 4 (chance 0.25)."""
    new = sorted((learned / "new").glob("*.mp4"))
    res = run("tag", *map(str, new), "--index", str(learned / "idx"), "--labels", ",".join(CONCEPTS), "--json")
    assert res.exit_code == 0, res.output
    results = json.loads(res.output)["results"]
    assert len(results) == len(CONCEPTS) * HELD_OUT
    right = [Path(r["path"]).name.startswith(r["labels"][0]["label"]) for r in results]
    assert np.mean(right) >= 0.9
    for r in results:
        assert all(x["scored_by"] == "concept" and 0.0 <= x["prob"] <= 1.0 for x in r["labels"])


def test_concepts_lists_and_forget_removes(learned: Path, tmp_path: Path) -> None:
    res = run("concepts", "--index", str(learned / "idx"), "--json")
    listed = {c["name"]: c for c in json.loads(res.output)["concepts"]}
    assert set(listed) == set(CONCEPTS)
    assert listed["fep"]["examples"][0].endswith("fep0.mp4") and listed["fep"]["held_out_accuracy"] is not None
    assert listed["fep"]["model"] == "demo" and listed["fep"]["learned_at"]
    learn = run("learn", "tmp", "--index", str(learned / "idx"), "--example", f"{learned / 'lib' / 'fep0.mp4'}@0-1")
    assert learn.exit_code == 0 and "Learned 'tmp'" in learn.output
    assert run("forget", "tmp", "--index", str(learned / "idx"), "--json").output.strip() == '{"forgotten": "tmp"}'
    again = run("forget", "tmp", "--index", str(learned / "idx"))
    assert again.exit_code == 1 and "No concept named 'tmp'" in again.output


def test_a_mixed_vocabulary_keeps_zero_shot_exact_for_plain_labels(learned: Path) -> None:
    """Labels that are not concepts get X-CLIP's softmax over the plain labels alone, exactly as without concepts."""
    with Index.open(learned / "idx") as index:
        plain = ["red circle moving left", "green triangle growing"]
        mixed = list(index.tag_index(["blicket", *plain], limit=6))
        alone = list(index.tag_index(plain, limit=6))
    for m, a in zip(mixed, alone, strict=True):
        got = {x.label: x for x in m.labels}
        for x in a.labels:
            # equal up to the text batch's padding (DESIGN.md: ~2e-6 of float rounding)
            assert got[x.label].prob == pytest.approx(x.prob, abs=1e-5)
            assert got[x.label].score == pytest.approx(x.score, abs=1e-5)
            assert got[x.label].scored_by is None
        assert got["blicket"].scored_by == "concept"


def test_search_by_concept_and_fused_with_text(learned: Path) -> None:
    res = run("search", "--concept", "blicket", "--index", str(learned / "idx"), "--top-k", "4", "--json")
    data = json.loads(res.output)
    assert data["concept"] == "blicket"
    hits = data["results"]
    assert {Path(h["path"]).stem for h in hits} == {f"blicket{i}" for i in range(K)}
    assert all(h["ranked_by"] == "concept" and h["concept_prob"] > 0.5 for h in hits)
    probs = [h["concept_prob"] for h in hits]
    assert probs == sorted(probs, reverse=True)
    with Index.open(learned / "idx") as index:  # `score` stays X-CLIP's own score for the label's text
        seg = index.segments_of(hits[0]["video_id"])[0]
        v, z = index.snapshot.vectors.gather(np.array([seg.id]))
        zero_shot = index.tag_embeddings(v, z, ["blicket", "x"])  # blicket is a concept: its score is X-CLIP's
        assert {x.label: x.score for x in zero_shot[0]}["blicket"] == pytest.approx(hits[0]["score"], abs=1e-6)
    fused = run("search", "red circle", "--concept", "wug", "--index", str(learned / "idx"), "--json")
    rows = json.loads(fused.output)["results"]
    assert rows and all(r["ranked_by"] == "text+concept" for r in rows)
    scale = math.exp(Index.open(learned / "idx").checkpoint.model.logit_scale.item())
    for r in rows:
        assert r["fused_score"] == pytest.approx(math.log(r["concept_prob"]) + scale * r["score"], abs=1e-4)
    keys = [r["fused_score"] for r in rows]
    assert keys == sorted(keys, reverse=True)
    filtered = run("search", "--concept", "blicket", "--index", str(learned / "idx"), "--glob", "*random*", "--json")
    assert all("random" in h["path"] for h in json.loads(filtered.output)["results"])


def test_saved_concept_tags_are_searchable(learned: Path) -> None:
    idx = str(learned / "idx")
    res = run("tag", "--index", idx, "--labels", "zorp", "--min-prob", "0.5", "--save", "--json")
    assert res.exit_code == 0
    found = json.loads(run("search", "square", "--index", idx, "--tag", "zorp", "--json").output)["results"]
    assert found and {Path(h["path"]).name[:4] for h in found} == {"zorp"}


def test_a_concept_learned_with_another_model_is_refused(learned: Path) -> None:
    with Index.open(learned / "idx") as index:
        row = index.catalog.concept_rows(["fep"])[0]
        index.catalog.save_concept(ConceptRow(**{**row.__dict__, "name": "alien", "model_hash": "0" * 64}))
    res = CliRunner().invoke(cli, ["tag", "--index", str(learned / "idx"), "--labels", "alien,fep"])
    assert res.exit_code == 1
    assert "Concept 'alien' was learned with another model" in res.output
    run("forget", "alien", "--index", str(learned / "idx"))


def test_export_includes_concepts(learned: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    with Index.open(learned / "idx") as index:
        report = index.export_parquet(tmp_path / "out", include_z=False)
    assert report.concepts == len(CONCEPTS)
    rows = pq.read_table(tmp_path / "out" / "concepts.parquet").to_pylist()
    assert {r["name"] for r in rows} == set(CONCEPTS)
    model = ConceptModel.from_json(rows[0]["model"])  # the classifier travels as JSON
    assert model.weights.shape == (64,)


def test_feedback_through_the_api(learned: Path) -> None:
    from fastapi.testclient import TestClient

    from xclip_search.serve.app import ServeSettings, create_app

    with Index.open(learned / "idx") as index:
        ids = {Path(r.path).name: r.id for v in index.videos()[1] for r in index.segments_of(v.video.id)}
    with TestClient(create_app(ServeSettings(index_dir=learned / "idx", extra_hosts=("testserver",)))) as client:
        pos = [ids["wug0.mp4"], ids["wug1.mp4"]]
        neg = [ids["blicket0.mp4"]]
        res = client.post("/api/search", json={"q": "circle", "positive": pos, "negative": neg, "top_k": 4})
        assert res.status_code == 200, res.text
        hits = res.json()["results"]
        assert all(h["ranked_by"] == "feedback" for h in hits)
        assert all(h["name"].startswith("wug") for h in hits[:2])
        assert {"wug0.mp4", "wug1.mp4"} <= {h["name"] for h in hits}
        assert "blicket0.mp4" not in {h["name"] for h in hits}
        assert sum(h["name"].startswith("wug") for h in hits) >= 3  # and finds another wug
        saved = client.post("/api/concepts", json={"name": "bluish", "q": "circle", "positive": pos, "negative": neg})
        assert saved.status_code == 200 and saved.json()["learned"]["text"] == "circle"
        assert "bluish" in {c["name"] for c in client.get("/api/concepts").json()["concepts"]}
        by_concept = client.post("/api/search", json={"concept": "bluish", "top_k": 3}).json()["results"]
        assert {"wug0.mp4", "wug1.mp4"} <= {h["name"] for h in by_concept}
        tagged = client.post("/api/tag", json={"labels": "bluish,running", "video_id": by_concept[0]["video_id"]})
        labels = {x["label"]: x for x in tagged.json()["segments"][0]["labels"]}
        assert labels["bluish"]["scored_by"] == "concept" and "scored_by" not in labels["running"]
        assert client.delete("/api/concepts/bluish").status_code == 200
        assert client.delete("/api/concepts/bluish").status_code == 404


def test_calibration_and_fit_on_synthetic_vectors() -> None:
    """Two Gaussian classes on the sphere: held-out accuracy is high and the probabilities are calibrated."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    pos = centre + rng.normal(scale=1.0, size=(40, 32))
    neg = rng.normal(scale=1.0, size=(600, 32))
    report = fit_concept(pos[:8], neg[:300], logit_scale=100.0)
    assert report.held_out_accuracy is not None and report.held_out_accuracy > 0.8
    probs = np.concatenate([report.model.probs(pos[8:]), report.model.probs(neg[300:332])])
    truth = np.r_[np.ones(32), np.zeros(32)]
    assert np.mean((probs >= 0.5) == truth) > 0.9
    assert calibration(probs, truth)["ece"] < 0.15
    again = ConceptModel.from_json(report.model.to_json())
    assert np.allclose(again.probs(pos), report.model.probs(pos))


@pytest.fixture()
def any_catalog(catalog_backend: str | None, tmp_path: Path) -> Iterator[Catalog]:
    url = catalog_backend or f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    catalog = Catalog.connect(CatalogLocation(url), create=True)
    yield catalog
    catalog.close()


def test_the_catalog_stores_concepts_on_both_backends(any_catalog: Catalog) -> None:
    row = ConceptRow(
        name="jam at station 3",
        model='{"weights": ""}',
        model_source="demo",
        model_hash="abc",
        method="logistic-v+text",
        text=None,
        examples=("/v/a.mp4@1-2", "segment:7"),
        positives=2,
        negatives=100,
        held_out_accuracy=None,
        learned_at="2026-01-01T00:00:00+00:00",
    )
    any_catalog.save_concept(row)
    any_catalog.save_concept(row)  # learning again replaces
    assert any_catalog.concept_rows() == [row]
    assert any_catalog.concept_rows(["other"]) == []
    assert any_catalog.forget_concept("jam at station 3") and not any_catalog.forget_concept("jam at station 3")


def test_an_old_catalog_gains_the_concepts_table(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    catalog = Catalog.connect(CatalogLocation(url), create=True)
    with catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE concepts")
    catalog.set_meta("schema_version", "4")
    catalog.close()
    again = Catalog.connect(CatalogLocation(url))
    assert inspect(again.engine).has_table("concepts") and again.get_meta("schema_version") == "6"
    again.close()


def test_tag_keeps_zero_shot_right_answers_and_lets_examples_break_its_ties() -> None:
    """Concepts whose text X-CLIP knows compete in `tag` by X-CLIP's zero-shot plus a small learned correction:
    a zero-shot answer with a margin survives a learned term that would overturn it (as the concepts' own
    probabilities do), an exact tie goes to the examples; alone, or without text, a concept keeps its own
    probability, and plain labels keep their softmax."""
    from xclip_search.concepts import TAG_CORRECTION, tag_probs

    rng = np.random.default_rng(3)
    dim, scale = 16, 10.0
    axis = np.eye(dim)
    neg = rng.normal(size=(300, dim))
    neg_s = rng.normal(0.0, 0.05, size=300)

    def learn(direction: int, text: str | None) -> ConceptModel:
        pos = 3 * axis[direction] + rng.normal(size=(6, dim))
        return fit_concept(
            pos, neg, logit_scale=scale, text=text, pos_s=np.full(6, 0.5), neg_s=neg_s, held_out=False
        ).model

    a, b, inv = learn(0, "a"), learn(1, "b"), learn(2, None)
    assert a.refines_zero_shot and b.refines_zero_shot and not inv.refines_zero_shot
    v = 3 * axis[1][None, :]  # looks like b's examples
    gap = TAG_CORRECTION * float(b.correction(v)[0] - a.correction(v)[0])
    assert gap > 0
    margin = 2 * gap / scale  # zero-shot prefers a by twice what the examples can add to b
    scores = np.array([[0.4, 0.4 - margin, 0.4, 0.3, 0.1]])
    own = [a.probs(v, scores[:, 0])[0], b.probs(v, scores[:, 1])[0]]
    assert own[1] > own[0]  # the concepts' own probabilities overturn zero-shot's answer
    models = [a, b, inv, None, None]
    probs = tag_probs(scores, models, v, [None] * 5, scale)
    assert probs[0, 0] > probs[0, 1]  # tag keeps it
    assert max(probs[0, 0], probs[0, 1]) < max(own) + 1e-12
    assert probs[0, 0] + probs[0, 1] == pytest.approx(max(own))
    assert probs[0, 2] == pytest.approx(inv.probs(v)[0])
    plain = np.exp(scale * scores[0, 3:]) / np.exp(scale * scores[0, 3:]).sum()
    assert probs[0, 3:] == pytest.approx(plain)
    tie = scores.copy()
    tie[0, 1] = 0.4
    assert tag_probs(tie, models, v, [None] * 5, scale)[0, :2].argmax() == 1  # a tie: the examples decide
    alone = tag_probs(scores, [a, None, inv, None, None], v, [None] * 5, scale)
    assert alone[0, 0] == pytest.approx(own[0])
    legacy = ConceptModel.from_json(json.dumps({**json.loads(b.to_json()), "centre": None}))
    assert not legacy.refines_zero_shot
    assert ConceptModel.from_json(b.to_json()).centre == pytest.approx(b.centre)
