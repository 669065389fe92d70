"""One engine under every face: the same query with the same filters through the command line (``--json``), the
Python API (`Index.search`) and the HTTP API (``/api/search``) gives the same answer: the same hits in the same
order, with the same ids, ranges and scores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from xclip_search import Index, SearchFilter
from xclip_search.cli import cli

from .test_serve_api import HIT_KEYS, make_client

QUERY = "a red square walking"


@dataclass(frozen=True)
class Case:
    """One search, spelled once and translated to each face's arguments."""

    name: str
    filters: tuple[str, ...] = ()
    glob: str | None = None
    prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    min_score: float | None = None
    all_segments: bool = False
    no_rerank: bool = False
    no_merge: bool = False
    top_k: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def cli_args(self, index_dir: Path) -> list[str]:
        args = ["search", QUERY, "--index", str(index_dir), "--json", "--top-k", str(self.top_k)]
        for f in self.filters:
            args += ["--filter", f]
        if self.glob is not None:
            args += ["--glob", self.glob]
        for p in self.prefixes:
            args += ["--path-prefix", p]
        for t in self.tags:
            args += ["--tag", t]
        if self.min_score is not None:
            args += ["--min-score", repr(self.min_score)]
        args += ["--all-segments"] * self.all_segments + ["--no-rerank"] * self.no_rerank
        return args + ["--no-merge"] * self.no_merge

    def api_kwargs(self) -> dict[str, Any]:
        where = SearchFilter.parse(
            list(self.filters), path_prefix=list(self.prefixes), glob=self.glob, tags=list(self.tags)
        )
        return {
            "top_k": self.top_k,
            "where": where,
            "min_score": self.min_score,
            "per_video": not self.all_segments,
            "rerank": not self.no_rerank,
            "merge": not self.no_merge,
        }

    def http_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "q": QUERY,
            "top_k": self.top_k,
            "per_video": str(not self.all_segments).lower(),
            "rerank": str(not self.no_rerank).lower(),
            "merge": str(not self.no_merge).lower(),
        }
        if self.filters:
            params["filter"] = list(self.filters)
        if self.glob is not None:
            params["path"] = self.glob
        if self.prefixes:
            params["path_prefix"] = list(self.prefixes)
        if self.tags:
            params["tag"] = list(self.tags)
        if self.min_score is not None:
            params["min_score"] = repr(self.min_score)
        return params


@pytest.fixture(scope="module")
def tagged_index(serve_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the served index with one saved label per segment ("red" or "blue", whichever is likelier)."""
    directory = tmp_path_factory.mktemp("faces") / "index"
    shutil.copytree(serve_index, directory)
    with Index.open(directory) as index:
        tagged = list(index.tag_index(["red", "blue"], top=1, save=True))
    labels = {s.labels[0].label for s in tagged}
    assert labels == {"red", "blue"}, labels  # both labels are in use: a tag filter keeps some segments only
    return directory


@pytest.fixture(scope="module")
def index(tagged_index: Path) -> Iterator[Index]:
    with Index.open(tagged_index) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(tagged_index: Path) -> Iterator[TestClient]:
    with make_client(tagged_index) as c:
        yield c


def cases(index: Index) -> list[Case]:
    library = str(Path(index.search(QUERY, top_k=1)[0].path).parent)
    plain = index.search(QUERY, top_k=10, per_video=False)
    median = sorted(h.score for h in plain)[len(plain) // 2]
    return [
        Case("plain"),
        Case("glob, shell negation", glob="*/library/[!b]*"),
        Case("glob, SQL negation", glob="*/library/[^b]*"),
        Case("glob, class", glob=f"{library}/[rg]*.mp4", all_segments=True),
        Case("path prefix", prefixes=(f"{library}/red", f"{library}/blue")),
        Case("tag", tags=("red",)),
        Case("tag, every segment", tags=("blue",), all_segments=True, top_k=100),
        Case("duration", filters=("duration>=3.5", "duration<=4.5")),
        Case("segment times (merge inside them)", filters=("start>=1", "end<=3")),
        Case("min-score", min_score=median),
        Case("all segments, no rerank", all_segments=True, no_rerank=True, top_k=100),
        Case("no rerank, no merge", no_rerank=True, no_merge=True),
        Case("everything", glob="*.mp4", filters=("start>=1",), tags=("red",), min_score=-1.0, all_segments=True),
    ]


def test_cli_api_and_http_give_the_same_answers(index: Index, client: TestClient, tagged_index: Path) -> None:
    answers: dict[str, list[dict[str, Any]]] = {}
    for case in cases(index):
        api = index.search(QUERY, **case.api_kwargs())
        result = CliRunner().invoke(cli, case.cli_args(tagged_index), catch_exceptions=False)
        assert result.exit_code == 0, (case.name, result.stderr)
        from_cli = json.loads(result.stdout)["results"]
        response = client.get("/api/search", params=case.http_params())
        assert response.status_code == 200, (case.name, response.text)
        from_http = response.json()["results"]

        want = [h.to_dict() for h in api]
        assert want, case.name  # every case finds something, so a disagreement cannot hide in two empty lists
        assert from_cli == want, case.name
        assert [{k: h[k] for k in HIT_KEYS} for h in from_http] == want, case.name
        assert [h["segment_id"] for h in from_http] == [h.segment_id for h in api], case.name
        answers[case.name] = want

    # The filters did restrict, and the two spellings of a negated class are one pattern.
    assert answers["glob, shell negation"] == answers["glob, SQL negation"] != answers["plain"]
    assert {Path(h["path"]).name[0] for h in answers["glob, shell negation"]} == {"r", "g"}
    assert {Path(h["path"]).name[0] for h in answers["path prefix"]} == {"r", "b"}
    assert all(h["start"] >= 1.0 and h["end"] <= 3.0 for h in answers["segment times (merge inside them)"])
    assert 0 < len(answers["min-score"]) < len(answers["plain"])
    assert all(h["score"] == h["coarse_score"] for h in answers["all segments, no rerank"])
