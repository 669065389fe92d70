"""The watcher: stability, debounce and batching on a fake clock; the inotify-limit fallback; and a real watched
folder whose new, slowly written, moved and deleted files reach the index once each."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexer.pipeline import FileOutcome, IndexOptions, IndexReport, run_index
from indexer.watch import (
    WATCHDOG_LOGGER,
    Batch,
    ChangeSet,
    FsEvent,
    Watcher,
    WatchSettings,
)
from xclip_search import Index
from xclip_search.errors import IndexBusyError

from .conftest import REAL_CLIP

SETTINGS = WatchSettings(settle_s=2.0, quiet_s=1.0, max_delay_s=30.0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class FakeFiles:
    """A stat table standing in for the file system: path -> (size, mtime_ns)."""

    def __init__(self) -> None:
        self.stamps: dict[str, tuple[int, int]] = {}

    def write(self, path: str, size: int) -> None:
        self.stamps[path] = (size, self.stamps.get(path, (0, 0))[1] + 1)

    def stat(self, path: str) -> tuple[int, int] | None:
        return self.stamps.get(path)


def changes() -> tuple[ChangeSet, Clock, FakeFiles]:
    clock, files = Clock(), FakeFiles()
    return ChangeSet(SETTINGS, clock=clock, stat=files.stat), clock, files


def test_a_growing_file_waits_until_its_size_and_mtime_settle() -> None:
    cs, clock, files = changes()
    files.write("/w/a.mp4", 100)
    cs.touched("/w/a.mp4")
    for size in (200, 300, 400):  # written in chunks, one per second, with no event (polling sees only stats)
        clock.advance(1.0)
        files.write("/w/a.mp4", size)
        assert cs.take() is None
    clock.advance(1.9)
    assert cs.take() is None  # unchanged for 1.9 s < settle
    clock.advance(0.2)
    assert cs.take() == Batch(files=("/w/a.mp4",), gone=())
    assert len(cs) == 0 and cs.take() is None


def test_events_on_a_file_restart_its_settle_time() -> None:
    cs, clock, files = changes()
    files.write("/w/a.mp4", 100)
    cs.touched("/w/a.mp4")
    clock.advance(1.5)
    cs.touched("/w/a.mp4")  # a modify event with stats that did not change yet (same mtime granularity)
    clock.advance(1.5)
    assert cs.take() is None
    clock.advance(0.6)
    assert cs.take() == Batch(files=("/w/a.mp4",), gone=())


def test_a_burst_of_thousands_is_one_batch_after_the_quiet_time() -> None:
    cs, clock, files = changes()
    paths = [f"/w/{i:05d}.mp4" for i in range(5000)]
    for i, p in enumerate(paths):
        clock.advance(0.002)  # 10 s of copying: the first files settled long ago, but events keep coming
        files.write(p, 10)
        cs.touched(p)
        if i % 500 == 499:
            assert cs.take() is None
    clock.advance(2.1)
    batch = cs.take()
    assert batch is not None and list(batch.files) == paths and batch.gone == ()
    assert cs.take() is None


def test_the_tail_of_a_burst_is_waited_for_but_a_long_write_does_not_hold_the_batch() -> None:
    cs, clock, files = changes()
    for i in range(20):  # two seconds of copying
        files.write(f"/w/{i:02d}.mp4", 10)
        cs.touched(f"/w/{i:02d}.mp4")
        clock.advance(0.1)
    clock.advance(1.0)
    assert cs.take() is None  # quiet, and the first files settled, but the last ones are 1 s old
    clock.advance(1.0)
    batch = cs.take()
    assert batch is not None and len(batch.files) == 20
    files.write("/w/long.mp4", 1)
    cs.touched("/w/long.mp4")
    for size in range(2, 7):  # a long write, then a small file copied next to it
        clock.advance(1.0)
        files.write("/w/long.mp4", size)
    files.write("/w/small.mp4", 1)
    cs.touched("/w/small.mp4")
    clock.advance(2.1)
    files.write("/w/long.mp4", 99)
    assert cs.take() == Batch(files=("/w/small.mp4",), gone=())


def test_a_continuous_stream_still_runs_after_the_max_delay() -> None:
    cs, clock, files = changes()
    files.write("/w/first.mp4", 10)
    cs.touched("/w/first.mp4")
    taken = None
    for i in range(400):  # a new file every 0.25 s: never quiet
        clock.advance(0.25)
        files.write(f"/w/n{i}.mp4", 10)
        cs.touched(f"/w/n{i}.mp4")
        taken = cs.take()
        if taken is not None:
            break
    assert taken is not None and taken.files[0] == "/w/first.mp4"
    assert clock.t - 1000.0 >= SETTINGS.settle_s + SETTINGS.max_delay_s
    assert "/w/n399.mp4" not in taken.files  # files still settling stay for the next batch


def test_a_move_lands_in_one_batch_and_deletions_wait_like_new_files() -> None:
    cs, clock, files = changes()
    files.write("/w/new/b.mp4", 10)
    cs.gone("/w/old/b.mp4")
    cs.touched("/w/new/b.mp4")
    clock.advance(1.5)
    assert cs.take() is None  # the deletion alone would prune vectors the move can keep
    clock.advance(0.6)
    assert cs.take() == Batch(files=("/w/new/b.mp4",), gone=("/w/old",))  # pruned through its folder


def test_a_file_deleted_before_it_settled_becomes_a_deletion_and_recreated_one_a_file() -> None:
    cs, clock, files = changes()
    files.write("/w/tmp.mp4", 10)
    cs.touched("/w/tmp.mp4")
    del files.stamps["/w/tmp.mp4"]
    clock.advance(2.5)
    assert cs.take() is None  # noticed as gone just now: it waits its settle time too
    clock.advance(2.1)
    assert cs.take() == Batch(files=(), gone=("/w",))
    cs.gone("/w/x.mp4")
    files.write("/w/x.mp4", 5)
    cs.touched("/w/x.mp4")  # deleted, then written again: only the file remains
    clock.advance(2.1)
    assert cs.take() == Batch(files=("/w/x.mp4",), gone=())


def test_a_deleted_file_waits_while_its_folder_holds_a_file_still_being_written() -> None:
    cs, clock, files = changes()
    files.write("/w/sub/deep/growing.mp4", 10)
    cs.touched("/w/sub/deep/growing.mp4")
    cs.gone("/w/sub/old.mp4")  # pruned through /w/sub, whose walk would see the unfinished file
    cs.gone("/w/other/x.mp4")
    cs.gone("/w/sub/gone-folder", is_dir=True)  # a folder is pruned through itself: no need to wait
    clock.advance(1.5)
    files.write("/w/sub/deep/growing.mp4", 20)
    assert cs.take() is None
    clock.advance(1.5)
    files.write("/w/sub/deep/growing.mp4", 30)
    assert cs.take() == Batch(files=(), gone=("/w/other", "/w/sub/gone-folder"))
    clock.advance(2.1)
    last = cs.take()
    assert last == Batch(files=("/w/sub/deep/growing.mp4",), gone=("/w/sub",))


# -- the watcher with a fake observer and a fake run_index ---------------------------------------------------


class FakeObserver:
    def __init__(self, polling: bool, fail: BaseException | None = None) -> None:
        self.polling, self.fail, self.started, self.stopped = polling, fail, False, False
        self.scheduled: list[str] = []

    def schedule(self, handler: Any, path: str, *, recursive: bool = False) -> None:
        self.scheduled.append(path)

    def start(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def join(self, timeout: float | None = None) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], bool]] = []
        self.fail: list[BaseException] = []

    def __call__(self, roots: list[str], index_dir: str, *, model: Any, options: IndexOptions) -> IndexReport:
        if self.fail:
            raise self.fail.pop(0)
        self.calls.append((roots, options.prune))
        return IndexReport(outcomes=[FileOutcome(r, "failed", "not found") for r in roots if not Path(r).exists()])


def make_watcher(
    tmp_path: Path, factory: Callable[[bool], Any], notices: list[str], runs: Recorder
) -> tuple[Watcher, Clock]:
    clock = Clock()
    root = tmp_path / "lib"
    root.mkdir(exist_ok=True)
    w = Watcher(
        [root],
        tmp_path / "idx",
        settings=SETTINGS,
        observer_factory=factory,
        run_index=runs,
        clock=clock,
        on_notice=notices.append,
    )
    return w, clock


def test_start_runs_once_over_the_roots_with_prune_and_vanished_roots_are_not_failures(tmp_path: Path) -> None:
    observers: list[FakeObserver] = []

    def factory(polling: bool) -> FakeObserver:
        observers.append(FakeObserver(polling))
        return observers[-1]

    runs, notices = Recorder(), list[str]()
    w, clock = make_watcher(tmp_path, factory, notices, runs)
    first = w.start()
    assert runs.calls == [([str(tmp_path / "lib")], True)] and first.trigger == "start"
    assert observers[0].started and not observers[0].polling and not notices
    video = tmp_path / "lib" / "a.mp4"
    video.write_bytes(b"x" * 10)
    w.feed([FsEvent("touched", str(video)), FsEvent("gone", str(tmp_path / "lib" / "b.mp4"))])
    w.feed([FsEvent("touched", str(tmp_path / "lib" / "notes.txt"))])  # not a video: ignored
    w.feed([FsEvent("touched", str(tmp_path / "idx" / "x.mp4"))])  # inside the index: ignored
    assert w.step() is None and w.waiting == 2
    clock.advance(2.1)
    result = w.step()
    assert result is not None and result.trigger == "changes"
    assert runs.calls[-1] == ([str(video), str(tmp_path / "lib")], True)  # b.mp4 is pruned through its folder
    assert result.report.to_dict()["failed"] == 0  # the vanished root is the prune's business
    w.close()
    assert observers[0].stopped


def test_the_inotify_limit_at_start_is_reported_and_polling_takes_over(tmp_path: Path) -> None:
    observers: list[FakeObserver] = []

    def factory(polling: bool) -> FakeObserver:
        fail = None if polling else OSError(errno.ENOSPC, "inotify watch limit reached")
        observers.append(FakeObserver(polling, fail))
        return observers[-1]

    runs, notices = Recorder(), list[str]()
    w, _ = make_watcher(tmp_path, factory, notices, runs)
    w.start()
    assert [o.polling for o in observers] == [False, True] and observers[1].started and w.polling
    assert len(notices) == 1 and notices[0].startswith("inotify watch limit reached (fs.inotify.max_user_watches=")
    assert "polling every 2 s" in notices[0]
    assert "max_user_watches" in notices[0]
    w.close()


def test_the_limit_hit_while_watching_switches_to_polling_and_rescans(tmp_path: Path) -> None:
    observers: list[FakeObserver] = []

    def factory(polling: bool) -> FakeObserver:
        observers.append(FakeObserver(polling))
        return observers[-1]

    runs, notices = Recorder(), list[str]()
    w, _ = make_watcher(tmp_path, factory, notices, runs)
    w.start()
    # What watchdog logs when a folder created later cannot get a watch (it would otherwise go unwatched).
    logging.getLogger(WATCHDOG_LOGGER).warning("Unable to watch %r: %s", b"/x/new", "[Errno 28] limit")
    result = w.step()
    assert [o.polling for o in observers] == [False, True] and observers[0].stopped and w.polling
    assert len(notices) == 1 and "polling" in notices[0]
    assert result is not None and result.trigger == "rescan"  # finds what the missing watch did not see
    assert runs.calls[-1] == ([str(tmp_path / "lib")], True)
    w.close()
    logging.getLogger(WATCHDOG_LOGGER).warning("Unable to watch %r", b"/x/after-close")  # no handler left


def test_an_inotify_observer_that_dies_is_replaced_by_polling_and_a_rescan(tmp_path: Path) -> None:
    class Dying(FakeObserver):
        alive = True

        def is_alive(self) -> bool:
            return self.alive

    observers: list[Dying] = []

    def factory(polling: bool) -> Dying:
        observers.append(Dying(polling))
        return observers[-1]

    runs, notices = Recorder(), list[str]()
    w, _ = make_watcher(tmp_path, factory, notices, runs)
    w.start()
    assert w.step() is None and not w.polling  # healthy: nothing to do
    observers[0].alive = False
    result = w.step()
    assert w.polling and [o.polling for o in observers] == [False, True] and "stopped watching" in notices[0]
    assert result is not None and result.trigger == "rescan"
    w.close()


def test_a_failed_batch_is_kept_and_retried_after_the_retry_time(tmp_path: Path) -> None:
    runs, notices = Recorder(), list[str]()
    w, clock = make_watcher(tmp_path, lambda polling: FakeObserver(polling), notices, runs)
    w.start()
    video = tmp_path / "lib" / "a.mp4"
    video.write_bytes(b"x")
    w.feed([FsEvent("touched", str(video))])
    w.step()
    clock.advance(2.1)
    runs.fail.append(IndexBusyError("The index is in use"))
    assert w.step() is None and w.waiting == 1
    assert "another indexer" in notices[-1]
    clock.advance(5.0)
    assert w.step() is None and len(runs.calls) == 1  # still backing off
    clock.advance(6.0)
    result = w.step()
    assert result is not None and runs.calls[-1] == ([str(video)], True) and w.waiting == 0
    w.close()


def test_a_folder_moved_in_is_walked_and_the_old_one_is_gone(tmp_path: Path) -> None:
    runs, notices = Recorder(), list[str]()
    w, clock = make_watcher(tmp_path, lambda polling: FakeObserver(polling), notices, runs)
    w.start()
    new = tmp_path / "lib" / "new"
    (new / "deep").mkdir(parents=True)
    (new / "deep" / "c.mkv").write_bytes(b"c")
    (new / "readme.txt").write_text("not a video")
    w.feed([FsEvent("moved", str(tmp_path / "lib" / "old"), str(new), is_dir=True)])
    w.step()
    clock.advance(2.1)
    result = w.step()
    assert result is not None
    assert runs.calls[-1] == ([str(new / "deep" / "c.mkv"), str(tmp_path / "lib" / "old")], True)  # folder: itself
    w.close()


# -- a real watched folder -------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_watched_folder_files_become_searchable_once_and_deletions_disappear(
    tmp_path: Path, tiny_ckpt: Path, generated_videos: dict[str, Path], polling: bool
) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    shutil.copy(generated_videos["square_mpeg4.avi"], lib / "square.avi")
    results: list[Any] = []
    lock = threading.Lock()

    def on_batch(r: Any) -> None:
        with lock:
            results.append(r)

    def indexed_paths() -> list[str]:
        with lock:
            return [o.path for r in results for o in r.report.outcomes if o.status == "indexed"]

    watcher = Watcher(
        [lib],
        idx,
        model=str(tiny_ckpt),
        options=IndexOptions(segment_seconds=2.0, workers=1),
        settings=WatchSettings(settle_s=3.0, quiet_s=0.5, recheck_s=0.2, poll_interval_s=0.5, polling=polling),
        on_batch=on_batch,
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert watcher.caught_up.wait(240) and watcher.error is None
        assert watcher.polling == polling
        assert indexed_paths() == [str(lib / "square.avi")]  # the start-up run found what was already there

        # One file copied at once, one written slowly in chunks (a download).
        shutil.copy(generated_videos["landscape_h264.mp4"], lib / "landscape.mp4")
        data = REAL_CLIP.read_bytes()
        slow = lib / "sub" / "bikes.mp4"
        slow.parent.mkdir()
        step = len(data) // 4 + 1
        with open(slow, "wb") as f:
            for k in range(4):
                # The next chunk once the watcher has seen this one's events (no fixed sleep). Counted before the
                # write: read after it, a watcher that was quicker than this thread had already counted them.
                seen = watcher.events_seen
                f.write(data[k * step : (k + 1) * step])
                f.flush()
                wait_for(lambda seen=seen: watcher.events_seen > seen, "the chunk to be noticed", 60)
        wait_for(lambda: str(slow) in indexed_paths(), "the slowly written file to be indexed")
        wait_for(lambda: str(lib / "landscape.mp4") in indexed_paths(), "the copied file to be indexed")
        with Index.open(idx) as index:
            rows = index.catalog.videos_by_path()
            hits = {h.path for h in index.search("a moving square", top_k=10)}
        assert {p for p, r in rows.items() if r["status"] == "indexed"} == {
            str(lib / "square.avi"),
            str(lib / "landscape.mp4"),
            str(slow),
        }
        assert hits == {str(lib / "square.avi"), str(lib / "landscape.mp4"), str(slow)}

        (lib / "square.avi").unlink()
        wait_for(
            lambda: any(o.status == "removed" for r in list(results) for o in r.report.outcomes),
            "the deleted file to be pruned",
        )
        with Index.open(idx) as index:
            hits = {h.path for h in index.search("a moving square", top_k=10)}
        assert hits == {str(lib / "landscape.mp4"), str(slow)}
        # Nothing was indexed twice: the growing file once, complete; every file once in all.
        assert sorted(indexed_paths()) == sorted([str(lib / "square.avi"), str(lib / "landscape.mp4"), str(slow)])
        assert all(o.status != "failed" for r in results for o in r.report.outcomes)
        assert watcher.polling == polling  # inotify stayed healthy all along
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()


# -- through the command line ------------------------------------------------------------------------------


def test_serve_watch_makes_new_files_searchable_and_deleted_ones_disappear(
    tmp_path: Path, tiny_ckpt: Path, generated_videos: dict[str, Path]
) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    shutil.copy(generated_videos["square_mpeg4.avi"], lib / "square.avi")
    run_index([lib], idx, model=str(tiny_ckpt), options=IndexOptions(segment_seconds=2.0, workers=1))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "xclip_search", "serve", "--index", str(idx), "--port", "0", "--json"]
    cmd += ["--watch", str(lib), "--settle", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def paths() -> set[str]:
        got = httpx.get(url + "api/search", params={"q": "a moving square", "top_k": 10}, timeout=60)
        assert got.status_code == 200, got.text
        return {h["path"] for h in got.json()["results"]}

    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert paths() == {str(lib / "square.avi")}
        shutil.copy(generated_videos["landscape_h264.mp4"], lib / "landscape.mp4")
        wait_for(lambda: str(lib / "landscape.mp4") in paths(), "the new file to be searchable through serve")
        (lib / "square.avi").unlink()
        wait_for(lambda: paths() == {str(lib / "landscape.mp4")}, "the deleted file to leave the results")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert err.count("1 indexed") == 1  # one run indexed the new file; the start-up run found nothing new


def test_watch_command_prints_one_json_line_per_run_and_stops_on_sigterm(
    tmp_path: Path, tiny_ckpt: Path, generated_videos: dict[str, Path]
) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "xclip_search", "watch", str(lib), "--index", str(idx), "--model", str(tiny_ckpt)]
    cmd += ["--segment-seconds", "2", "--settle", "1", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        start = json.loads(proc.stdout.readline())
        assert start["trigger"] == "start" and start["indexed"] == 0 and start["paths"] == 1
        shutil.copy(generated_videos["landscape_h264.mp4"], lib / "new.mp4")
        run = json.loads(proc.stdout.readline())
        assert (run["trigger"], run["indexed"], run["failed"], run["paths"]) == ("changes", 1, 0, 1)
        assert set(run) == {*start} and run["segments"] >= 1
    finally:
        proc.terminate()  # SIGTERM: the watcher stops after the run in flight
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err
    with Index.open(idx) as index:
        assert set(index.catalog.videos_by_path()) == {str(lib / "new.mp4")}


# -- the inotify limit through watchdog's own code -------------------------------------------------------------


@pytest.fixture()
def watch_limit(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    """Make inotify_add_watch fail with ENOSPC (the watch limit) for paths containing a marker, as the kernel
    does once fs.inotify.max_user_watches is used up."""
    import ctypes

    from watchdog.observers import inotify_c

    real = inotify_c.inotify_add_watch
    markers: list[bytes] = []

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if any(m in path for m in markers):
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return int(real(fd, path, mask))

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    return markers.append


def test_watchdog_hitting_the_limit_at_start_falls_back_to_polling(
    tmp_path: Path, watch_limit: Callable[[bytes], None]
) -> None:
    watch_limit(str(tmp_path).encode())
    runs, notices = Recorder(), list[str]()
    (tmp_path / "lib").mkdir()
    w = Watcher([tmp_path / "lib"], tmp_path / "idx", run_index=runs, on_notice=notices.append)
    w.start()
    try:
        assert w.polling and len(notices) == 1 and notices[0].startswith("inotify watch limit reached")
        assert runs.calls == [([str(tmp_path / "lib")], True)]
    finally:
        w.close()


def test_watchdog_hitting_the_limit_for_a_new_folder_falls_back_and_rescans(
    tmp_path: Path, watch_limit: Callable[[bytes], None]
) -> None:
    runs, notices = Recorder(), list[str]()
    (tmp_path / "lib").mkdir()
    w = Watcher([tmp_path / "lib"], tmp_path / "idx", run_index=runs, on_notice=notices.append)
    w.start()
    try:
        assert not w.polling
        watch_limit(b"/blocked")
        (tmp_path / "lib" / "blocked").mkdir()  # watchdog cannot watch it: its files would go unseen
        deadline = time.monotonic() + 60
        rescans = []
        while not rescans and time.monotonic() < deadline:
            result = w.step(0.2)
            if result is not None and result.trigger == "rescan":
                rescans.append(result)
        assert rescans and w.polling
        assert any("inotify watch limit reached" in n and "polling" in n for n in notices)
    finally:
        w.close()


@pytest.mark.parametrize(
    "code,message,sysctl,raised",
    [
        (errno.ENOSPC, "inotify watch limit reached", "max_user_watches", "1048576"),
        (errno.EMFILE, "inotify instance limit reached", "max_user_instances", "1024"),
    ],
    ids=["watches", "instances"],
)
def test_watch_falls_back_to_polling_with_one_warning_line_when_schedule_hits_the_limit(
    tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str, sysctl: str, raised: str
) -> None:
    """Issue 14: what `watch` does when inotify runs out. watchdog raises ``OSError(ENOSPC, "inotify watch limit
    reached")`` (EMFILE for instances) when it cannot add a watch; the command must not crash: one warning line
    on stderr, then the same watch by polling (watchdog's PollingObserver), starting with the start-up run."""
    from click.testing import CliRunner
    from watchdog.observers.inotify import InotifyObserver
    from watchdog.observers.polling import PollingObserver

    from xclip_search.cli import cli

    def schedule(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, message)

    seen: list[Any] = []

    def run_once(w: Watcher, stop: threading.Event) -> None:  # start (the start-up run), look, stop
        w.start()
        seen.append((w.polling, type(w._observer)))
        w.close()

    monkeypatch.setattr(InotifyObserver, "schedule", schedule)
    monkeypatch.setattr(Watcher, "run", run_once)
    lib = tmp_path / "lib"
    lib.mkdir()
    result = CliRunner().invoke(
        cli, ["watch", str(lib), "--index", str(tmp_path / "idx"), "--model", str(tiny_ckpt)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert seen == [(True, PollingObserver)]
    value = Path("/proc/sys/fs/inotify", sysctl).read_text().strip()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        f"Warning: {message} (fs.inotify.{sysctl}={value}): watching by polling every 2 s instead; "
        f"raise it with: sudo sysctl fs.inotify.{sysctl}={raised}"
    ]
    assert "[start] 0 indexed" in result.stderr and "Traceback" not in result.output


def test_the_limit_hit_on_a_later_root_leaves_no_inotify_thread_behind(
    tmp_path: Path, watch_limit: Callable[[bytes], None]
) -> None:
    """The first root gets its inotify emitter, the second hits the limit: the half-started inotify observer is
    stopped before polling takes over (else its emitter kept watching: a leaked thread and every event twice)."""
    from watchdog.observers.inotify import InotifyEmitter

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    watch_limit(str(tmp_path / "b").encode())
    runs, notices = Recorder(), list[str]()
    w = Watcher([tmp_path / "a", tmp_path / "b"], tmp_path / "idx", run_index=runs, on_notice=notices.append)
    w.start()
    try:
        assert w.polling and len(notices) == 1 and notices[0].startswith("inotify watch limit reached")
        assert not [t for t in threading.enumerate() if isinstance(t, InotifyEmitter) and t.is_alive()]
    finally:
        w.close()


def test_the_roots_of_watch_runs_do_not_pile_up_in_the_servers_roots(tmp_path: Path) -> None:
    from xclip_search.serve.media import roots_from_runs

    lib = (tmp_path / "lib").resolve()
    runs = [(json.dumps([str(lib)]), [])]  # the start-up run
    runs += [(json.dumps([str(lib / f"{i}.mp4"), str(lib / "sub")]), []) for i in range(1000)]  # batches
    runs += [(json.dumps([str(tmp_path / "lib-other")]), [])]
    assert roots_from_runs(runs) == [lib, (tmp_path / "lib-other").resolve()]


def test_a_sidecar_subtitle_change_reruns_its_videos(tmp_path: Path) -> None:
    """Issue 16: a subtitle file that appears, changes or goes hands its video(s) to a run, which re-reads their
    sidecars (the video's frames are unchanged, so nothing is re-encoded)."""
    runs, notices = Recorder(), list[str]()
    w, clock = make_watcher(tmp_path, lambda polling: FakeObserver(polling), notices, runs)
    w.start()
    lib = tmp_path / "lib"
    for name in ("movie.mp4", "movie.mkv", "other.mp4"):
        (lib / name).write_bytes(b"x" * 10)
    (lib / "movie.en.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    w.feed([FsEvent("touched", str(lib / "movie.en.srt")), FsEvent("gone", str(lib / "other.vtt"))])
    assert w.step() is None and w.waiting == 3  # the videos beside them, not the subtitle files
    clock.advance(2.1)
    result = w.step()
    assert result is not None and result.trigger == "changes"
    assert sorted(runs.calls[-1][0]) == [str(lib / "movie.mkv"), str(lib / "movie.mp4"), str(lib / "other.mp4")]
    w.close()
