"""Every command through click: JSON shapes (DESIGN.md §4), human output, exit codes and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from xclip_search.cli import cli

from .conftest import REAL_CLIP

ROOT = Path(__file__).resolve().parents[1]
HIT_KEYS = {"rank", "video_id", "path", "start", "end", "score", "coarse_score", "match", "cue", "fused_score"}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: ")
    return first


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path, generated_videos: dict[str, Path]) -> Path:
    import shutil

    lib = tmp_path_factory.mktemp("clilib")
    for src in generated_videos.values():
        shutil.copy(src, lib / src.name)
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    (lib / "broken.mp4").write_text("nope")
    idx = lib.parent / "cli-index"
    result = run(
        "index",
        str(lib),
        "--index",
        str(idx),
        "--model",
        str(tiny_ckpt),
        "--segments",
        "fixed",
        "--segment-seconds",
        "2",
        "--workers",
        "1",
        "--json",
    )
    assert result.exit_code == 3, result.stderr  # one file failed
    report = json.loads(result.stdout)
    assert set(report) >= {"indexed", "unchanged", "failed", "removed", "segments"}
    assert (report["indexed"], report["failed"], report["unchanged"], report["removed"]) == (5, 1, 0, 0)
    assert report["segments"] == 5 + 4  # bikes: 10 s in 2 s windows; each generated clip is under 3 s
    return idx


def test_index_rerun_json_and_human_output(built: Path, tmp_path: Path) -> None:
    lib = built.parent / "clilib0"  # the library the `built` fixture indexed (tmp_path_factory numbering)
    result = run("index", str(lib), "--index", str(built), "--json")
    assert result.exit_code == 3, (result.stdout, result.stderr)  # not_a_video.mp4 is still failed
    report = json.loads(result.stdout)
    assert (report["unchanged"], report["failed"], report["still_failed"]) == (6, 0, 1)
    human = run("index", str(lib), "--index", str(built))
    assert human.exit_code == 3 and "0 video(s)" in human.stdout and "6 unchanged" in human.stdout


def test_search_json_shape(built: Path) -> None:
    result = run("search", "a person riding a bike", "--index", str(built), "--json", "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"query", "results"} and data["query"] == "a person riding a bike"
    assert len(data["results"]) == 3
    for i, hit in enumerate(data["results"], 1):
        assert set(hit) == HIT_KEYS
        assert hit["rank"] == i and Path(hit["path"]).is_absolute() and hit["end"] > hit["start"] >= 0
        assert isinstance(hit["video_id"], int) and isinstance(hit["score"], float)
    assert len({h["video_id"] for h in data["results"]}) == 3  # one hit per video by default
    scores = [h["score"] for h in data["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_all_segments_and_no_rerank(built: Path) -> None:
    every = json.loads(
        run("search", "bikes", "--index", str(built), "--json", "--top-k", "50", "--all-segments").stdout
    )
    assert len(every["results"]) == 9
    coarse = json.loads(run("search", "bikes", "--index", str(built), "--json", "--no-rerank").stdout)
    assert all(h["score"] == h["coarse_score"] for h in coarse["results"])
    reranked = json.loads(run("search", "bikes", "--index", str(built), "--json").stdout)
    assert any(h["score"] != h["coarse_score"] for h in reranked["results"])


def test_search_human_table_and_env_default(built: Path, tmp_path: Path) -> None:
    result = run("search", "bikes", env={"XCLIP_SEARCH_INDEX": str(built)})
    assert result.exit_code == 0
    header, _rule, first, *_ = result.stdout.splitlines()
    assert header.split() == ["#", "score", "time", "path"]
    assert re.match(r"1\s+-?\d\.\d{4}\s+\d+:\d\d\.\d-\d+:\d\d\.\d\s+/", first)


def test_tag_files_with_model_json_shape(tiny_ckpt: Path, generated_videos: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    labels = "bikes,a rabbit,moving left,growing"
    result = run(
        "tag",
        str(REAL_CLIP),
        str(bad),
        "--model",
        str(tiny_ckpt),
        "--labels",
        labels,
        "--top",
        "4",
        "--segment-seconds",
        "5",
        "--json",
    )
    assert result.exit_code == 3, result.stderr
    data = json.loads(result.stdout)
    # Cut into shots (the default without an index): bikes has 5 shots, each under 5 s.
    assert [r["path"] for r in data["results"]] == [str(REAL_CLIP.resolve())] * 5
    assert data["failed"][0]["path"] == str(bad.resolve())
    for r in data["results"]:
        assert set(r) == {"path", "start", "end", "labels"}
        assert {x["label"] for x in r["labels"]} == set(labels.split(","))
        assert all(set(x) == {"label", "prob", "score"} for x in r["labels"])
        assert sum(x["prob"] for x in r["labels"]) == pytest.approx(1.0, abs=1e-5)
    assert [(r["start"], r["end"]) for r in data["results"]][:2] == [(0.0, 1.2), (1.2, 3.04)]
    assert data["results"][-1]["end"] == 10.0


def test_tag_labels_file_top_and_human_output(built: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# motions\nmoving left\n\nmoving right\ngrowing\n")
    result = run(
        "tag",
        str(REAL_CLIP),
        "--index",
        str(built),
        "--labels-file",
        str(labels),
        "--top",
        "2",
        "--segment-seconds",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(str(REAL_CLIP.resolve())) and line.count("%") == 2


def test_tag_whole_index_from_stored_vectors(built: Path) -> None:
    result = run("tag", "--index", str(built), "--labels", "bikes,rabbit", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["results"]) == 9


def test_info_json_and_failures(built: Path) -> None:
    data = json.loads(run("info", "--index", str(built), "--json", "--failures").stdout)
    assert data["videos"] == {"indexed": 5, "failed": 1, "skipped": 0, "removed": 0}
    assert data["segments"] == 9 and data["ann"]["type"] == "flat" and data["ann"]["count"] == 9
    assert data["model"]["num_frames"] == 8 and data["bytes"]["total"] > 0
    assert data["failures"][0]["path"].endswith("broken.mp4") and data["failures"][0]["reason"]
    human = run("info", "--index", str(built), "--failures")
    assert "segments" in human.stdout and "broken.mp4" in human.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "x", "--index", "{tmp}/missing"], "No index at"),
        (["info", "--index", "{tmp}"], "not an xclip-search index"),
        (["index", "{tmp}/absent.mp4", "--index", "{tmp}/i"], "does not exist"),
        (["index", "{clip}", "--index", "{tmp}/i", "--model", "{tmp}/no-such-model"], "not found"),
        (["search", "   ", "--index", "{built}"], "Empty query"),
        (["search", "x", "--index", "{built}", "--top-k", "0"], "top-k"),
        (["tag", "{clip}", "--model", "{tmp}"], "No labels"),
        (["tag", "{clip}", "--labels", "a"], "exactly one of --model or --index"),
        (["tag", "--model", "demo-missing", "--labels", "a"], "No videos to tag"),
        (["tag", "{clip}", "--index", "{built}", "--labels", " , ,"], "No labels"),
        (["index", "{clip}", "--index", "{tmp}/i2", "--segment-seconds", "-1"], "segment-seconds"),
        (["search"], "No query given"),
    ],
)
def test_user_errors_are_one_line_with_exit_1(args: list[str], needle: str, tmp_path: Path, built: Path) -> None:
    filled = [a.format(tmp=tmp_path, clip=REAL_CLIP, built=built) for a in args]
    assert needle in one_line_error(run(*filled))


def test_pickled_checkpoint_error_has_a_hint(tmp_path: Path) -> None:
    from xclip_search.testing import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "pickled", pickled=True)
    result = run("index", str(REAL_CLIP), "--index", str(tmp_path / "i"), "--model", str(ckpt))
    assert "pickled" in one_line_error(result)
    assert result.stderr.splitlines()[1].startswith("Hint: ")


def test_mismatched_model_is_refused(built: Path, other_ckpt: Path) -> None:
    assert "refusing" in one_line_error(run("index", str(REAL_CLIP), "--index", str(built), "--model", str(other_ckpt)))


def test_every_command_has_help_with_examples_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in cli.commands.items():
        result = run(name, "--help")
        assert result.exit_code == 0 and "Examples" in result.stdout, name
        assert f"xclip-search {name}" in readme, name
        for param in command.params:
            if param.name != "help" and isinstance(param, __import__("click").Option):
                assert param.help, (name, param.name)
    assert run("--version").stdout.startswith("xclip-search")
