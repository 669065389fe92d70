"""Crash consistency of a whole indexing run, through the real command line.

A run is killed at every step of the commit protocol (deterministic crash points, as SQLite's crash tests do)
and at random moments (SIGKILL); after each crash the index must stay readable and show nothing wrong, and
running the same command again must give exactly the search results of an uninterrupted run: nothing lost,
nothing duplicated. Decode workers must not outlive a killed run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from xclip_search import Index

from .conftest import REAL_CLIP

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["a person riding a bike", "a red square moving"]
Results = dict[tuple[str, float, float], float]


@pytest.fixture(scope="module")
def crash_lib(tmp_path_factory: pytest.TempPathFactory, generated_videos: dict[str, Path]) -> Path:
    lib = tmp_path_factory.mktemp("crash-lib")
    shutil.copy(REAL_CLIP, lib / "bikes_a.mp4")
    shutil.copy(generated_videos["landscape_h264.mp4"], lib / "landscape.mp4")
    shutil.copy(generated_videos["portrait_vp9.webm"], lib / "portrait.webm")
    shutil.copy(generated_videos["square_mpeg4.avi"], lib / "square.avi")
    (lib / "sub").mkdir()
    shutil.copy(REAL_CLIP, lib / "sub" / "bikes_b.mp4")
    (lib / "sub" / "broken.mp4").write_bytes(b"\x00" * 2048)
    return lib


def index_cmd(lib: Path, idx: Path, ckpt: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xclip_search",
        "index",
        str(lib),
        "--index",
        str(idx),
        "--model",
        str(ckpt),
        "--segment-seconds",
        "1",
        "--commit-every",
        "3",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--json",
        *extra,
    ]


def env_for(crash_at: str | None = None, mark: str = "", pause_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XCLIP_SEARCH_CRASH_AT", "XCLIP_SEARCH_PAUSE_AT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["XCLIP_TEST_MARK"] = mark
    if crash_at:
        env["XCLIP_SEARCH_CRASH_AT"] = crash_at
    if pause_at:
        env["XCLIP_SEARCH_PAUSE_AT"] = pause_at
    return env


def run_index_cli(lib: Path, idx: Path, ckpt: Path, crash_at: str | None = None) -> int:
    done = subprocess.run(index_cmd(lib, idx, ckpt), env=env_for(crash_at), capture_output=True, check=False)
    return done.returncode


def results(idx: Path) -> Results:
    out: Results = {}
    with Index.open(idx) as index:
        for query in QUERIES:
            for hit in index.search(query, top_k=1000, candidates=1000, per_video=False):
                out[(hit.path, round(hit.start, 3), round(hit.end, 3))] = hit.score
    return out


def state(idx: Path) -> tuple[int, dict[str, int]]:
    with Index.open(idx) as index:
        info = index.info()
    return info["segments"], info["videos"]


def assert_same(got: Results, expected: Results) -> None:
    assert set(got) == set(expected)
    worst = max((abs(got[k] - expected[k]) for k in expected), default=0.0)
    assert worst < 1e-5


def assert_consistent_subset(idx: Path, expected: Results) -> None:
    """Right after a crash: readable, and whatever is visible is correct (a subset of the final results)."""
    got = results(idx)
    assert set(got) <= set(expected)
    for key, score in got.items():
        assert abs(score - expected[key]) < 1e-5


def assert_clean(idx: Path) -> None:
    assert [p.name for p in idx.rglob("*") if ".tmp-" in p.name] == []
    with Index.open(idx) as index:
        shards = {s.name for s in index.snapshot.manifest.shards}
    assert {p.name.split(".")[0] for p in (idx / "vectors").glob("*.npy")} == shards
    # thumbnails follow their shard: a crash after writing them (before the commit) leaves nothing behind
    assert {p.name.split(".")[0] for p in (idx / "thumbnails").iterdir()} == shards


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, crash_lib: Path, tiny_ckpt: Path) -> tuple[Results, tuple]:
    """An uninterrupted run: its results, its counts, and how long it took."""
    idx = tmp_path_factory.mktemp("reference") / "idx"
    started = time.monotonic()
    assert run_index_cli(crash_lib, idx, tiny_ckpt) == 3  # broken.mp4 fails
    return results(idx), state(idx), time.monotonic() - started


def crash_then_resume(tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, step: str, reference: tuple) -> None:
    expected, expected_state, _ = reference
    idx = tmp_path / "idx"
    assert run_index_cli(crash_lib, idx, tiny_ckpt, crash_at=step) == 137
    assert_consistent_subset(idx, expected)
    assert run_index_cli(crash_lib, idx, tiny_ckpt) in (0, 3)
    assert_same(results(idx), expected)
    assert state(idx) == expected_state
    assert_clean(idx)
    # And once more: everything is unchanged now.
    assert run_index_cli(crash_lib, idx, tiny_ckpt) == 3  # nothing to do, but broken.mp4 is still failed
    assert_same(results(idx), expected)


FAST_STEPS = ["catalog-committed:2", "batch-encoded:4"]
ALL_STEPS = [
    "shard-written:1",
    "shard-written:3",
    "catalog-committed:1",
    "catalog-committed:3",
    "manifest-published:2",
    "batch-encoded:1",
    "batch-encoded:5",
    "ann-built",
    "ann-written",
    "ann-published",
]


@pytest.mark.parametrize("step", FAST_STEPS)
def test_crash_at_a_commit_step_then_resume(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, step: str, reference: tuple
) -> None:
    crash_then_resume(tmp_path, crash_lib, tiny_ckpt, step, reference)


@pytest.mark.slow
@pytest.mark.parametrize("step", [s for s in ALL_STEPS if s not in FAST_STEPS])
def test_crash_at_every_commit_step_then_resume(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, step: str, reference: tuple
) -> None:
    crash_then_resume(tmp_path, crash_lib, tiny_ckpt, step, reference)


def worker_pids(mark: str) -> list[int]:
    """Decode workers started by a run whose environment carries `mark`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"indexer.worker" in cmdline and f"XCLIP_TEST_MARK={mark}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def kill_run_at(lib: Path, idx: Path, ckpt: Path, after_s: float) -> int | None:
    """Start a run, SIGKILL it after `after_s` seconds; returns its exit code if it finished first."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        index_cmd(lib, idx, ckpt), env=env_for(mark=mark), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return proc.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while worker_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(mark) == [], "decode workers outlived the killed run"
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_run_takes_its_workers_with_it(tmp_path: Path, crash_lib: Path, tiny_ckpt: Path) -> None:
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        index_cmd(crash_lib, tmp_path / "idx", tiny_ckpt),
        env=env_for(mark=mark),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not worker_pids(mark) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before its workers could be observed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while worker_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(mark) == []


@pytest.mark.slow
def test_random_kills_then_finish_equals_an_uninterrupted_run(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, reference: tuple
) -> None:
    """SIGKILL at random moments, resuming each time; every finish must equal an uninterrupted run.

    A resumed run has less left to do, so it may finish before its kill comes. That finish is checked like the
    final one, the index is started again, and later kills come sooner: the test gets its kills however fast
    or slow the machine is, instead of depending on the first run's timing.
    """
    expected, expected_state, duration = reference
    idx = tmp_path / "idx"
    rng = random.Random(20240611)
    kills, finishes, scale = 0, 0, 1.0
    for _ in range(16):
        code = kill_run_at(crash_lib, idx, tiny_ckpt, rng.uniform(0.2, 0.8) * duration * scale)
        if code is None:
            kills += 1
            if (idx / "manifest.json").exists():
                assert_consistent_subset(idx, expected)
            if kills >= 5:
                break
            continue
        assert code in (0, 3)
        assert_same(results(idx), expected)
        assert state(idx) == expected_state
        assert_clean(idx)
        finishes += 1
        shutil.rmtree(idx)
        scale *= 0.6
    assert kills >= 3, f"only {kills} kills landed before the run finished ({finishes} finishes)"
    assert run_index_cli(crash_lib, idx, tiny_ckpt) in (0, 3)
    assert_same(results(idx), expected)
    assert state(idx) == expected_state
    assert_clean(idx)


def default_sigint() -> None:
    """Ctrl-C as at a terminal, even where the tests run with SIGINT ignored (``nohup``, a script's ``&``):
    an ignored SIGINT is inherited, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals a process group")
def test_ctrl_c_keeps_committed_work_and_blames_no_file(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, reference: tuple
) -> None:
    """Ctrl-C reaches the whole process group, workers included: no file may be marked failed for it.

    The run stops at a known step, its fourth model batch of four segments (with one worker, files decode in
    walk order: the first clip's ten segments were committed with the third), and says so on stderr; only then
    is Ctrl-C sent. Waiting
    for a published generation instead raced with the run: on a loaded machine the run could be exiting
    (all committed) by the time the signal came, and a signal in the interpreter's exit handlers is ignored.
    """
    expected, expected_state, _ = reference
    idx = tmp_path / "idx"
    proc = subprocess.Popen(
        index_cmd(crash_lib, idx, tiny_ckpt),
        env=env_for(pause_at="batch-encoded:4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    assert proc.stderr is not None
    before = b""
    for line in proc.stderr:  # blocks until the run reaches the step (or ends without reaching it)
        before += line
        if line.startswith(b"paused at batch-encoded"):
            break
    else:
        proc.wait()
        pytest.fail(f"the run ended ({proc.returncode}) without reaching the step: {before.decode()}")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert b"Interrupted" in err
    segments, _ = state(idx)
    assert 0 < segments < expected_state[0]  # the committed work is kept, and the run did stop midway
    with Index.open(idx) as index:
        blamed = [f for f in index.failures() if not f["path"].endswith("broken.mp4")]
    assert blamed == []
    assert run_index_cli(crash_lib, idx, tiny_ckpt) in (0, 3)
    assert_same(results(idx), expected)
    assert state(idx) == expected_state


@pytest.mark.parametrize("step", ["shard-written", "catalog-committed", "manifest-published"])
def test_ctrl_c_inside_a_commit_is_left_to_recovery(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, reference: tuple, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """KeyboardInterrupt raised inside the writer's commit protocol: the run still ends as an interrupt (never
    a second commit of the same batch), and the next run recovers to the reference results."""
    from indexer.pipeline import IndexOptions, run_index
    from xclip_search.store import writer as writer_module

    expected, expected_state, _ = reference
    seen = {"n": 0}

    def interrupt(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "crash_point", interrupt)
    opts = IndexOptions(segment_seconds=1.0, workers=1, commit_every=3, batch_size=4)
    idx = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        run_index([crash_lib], idx, model=str(tiny_ckpt), options=opts)
    monkeypatch.undo()
    assert_consistent_subset(idx, expected)
    run_index([crash_lib], idx, options=opts)
    assert_same(results(idx), expected)
    assert state(idx) == expected_state
    assert_clean(idx)


@pytest.mark.parametrize("step", ["compact-written", "compact-committed"])
def test_crash_inside_an_end_of_run_compaction(
    tmp_path: Path, crash_lib: Path, tiny_ckpt: Path, reference: tuple, step: str
) -> None:
    """An ``index --prune`` run that compacts at its end, killed inside the compaction: the pruned generation
    stays whole, and the next run finishes the job (see also tests/test_compaction.py)."""
    from xclip_search.store import compaction

    lib = tmp_path / "lib"
    shutil.copytree(crash_lib, lib)
    idx = tmp_path / "idx"
    assert run_index_cli(lib, idx, tiny_ckpt) == 3
    (lib / "bikes_a.mp4").unlink()  # the longest videos: well over 20% of the vector rows die
    (lib / "sub" / "bikes_b.mp4").unlink()
    expected = {
        (str(lib / Path(path).relative_to(crash_lib)), start, end): score
        for (path, start, end), score in reference[0].items()
        if Path(path).name not in ("bikes_a.mp4", "bikes_b.mp4")
    }
    prune = index_cmd(lib, idx, tiny_ckpt, "--prune")
    assert subprocess.run(prune, env=env_for(step), capture_output=True, check=False).returncode == 137
    assert_same(results(idx), expected)  # the prune was published before the compaction began
    assert subprocess.run(prune, env=env_for(), capture_output=True, check=False).returncode in (0, 3)
    assert_same(results(idx), expected)
    with Index.open(idx) as index:
        assert index.info()["compaction"]["dead_rows"] == 0
        shards = {s.name for s in index.snapshot.manifest.shards}
        retired = {str(r["name"]) for r in compaction.retired_shards(index.catalog)}
        assert index.snapshot.manifest.ann is not None
    assert shards <= {p.name.split(".")[0] for p in (idx / "vectors").glob("*.npy")} <= shards | retired
