"""Speech transcription (``index --transcribe``, issue 16): audio decoded in the isolated workers, a tiny
random-init Whisper through faster-whisper, "speech" cues in the catalog, incremental re-runs, broken sound.

The tiny Whisper's words are noise: these tests check the plumbing (what the model returns is what the catalog
holds, at the right times, once per content), not what a real model would hear.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from indexer.audio import SAMPLE_RATE, decode_audio
from indexer.framejobs import FrameJobs
from xclip_search.cli import cli
from xclip_search.errors import VideoError
from xclip_search.speech import SpeechModel, Transcript, load_speech_model
from xclip_search.store.cues import Cue
from xclip_search.testing import make_tiny_whisper, speech_like_audio, synthetic_frames, write_video_with_audio

pytest.importorskip("faster_whisper")

TALK_S = 12.0


def _clip(path: Path, seed: int, *, audio: bool = True, broken: bool = False) -> Path:
    frames = synthetic_frames(int(TALK_S * 5), 48, 64, seed=seed)
    sound = speech_like_audio(TALK_S, seed=seed) if audio else None
    return write_video_with_audio(path, frames, sound, fps=5, broken_audio=broken)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.fixture(autouse=True)
def whisper_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversions to CTranslate2 go to a temporary cache shared by this module's tests, never ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    root.mkdir()
    _clip(root / "talk.mp4", seed=1)
    _clip(root / "broken_sound.mp4", seed=2, broken=True)
    _clip(root / "silent.mp4", seed=3, audio=False)
    return root


class Calls:
    """Every transcription the run makes, with what the model returned (the real model still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads = 0
        self.results: list[tuple[float, Transcript]] = []
        real_transcribe = SpeechModel.transcribe
        real_load = load_speech_model

        def transcribe(model: SpeechModel, waveform: np.ndarray) -> Transcript:
            out = real_transcribe(model, waveform)
            self.results.append((waveform.size / SAMPLE_RATE, out))
            return out

        def load(*args: object, **kwargs: object) -> SpeechModel:
            self.loads += 1
            return real_load(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(SpeechModel, "transcribe", transcribe)
        monkeypatch.setattr("xclip_search.speech.load_speech_model", load)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _index(lib: Path, idx: Path, ckpt: Path, whisper: Path, *extra: str) -> Result:
    return run(
        "index", str(lib), "--index", str(idx), "--model", str(ckpt), "--workers", "1",
        "--transcribe", "--speech-model", str(whisper), "--json", *extra,
    )  # fmt: skip


def _speech_cues(idx: Path) -> dict[str, list[Cue]]:
    from xclip_search.store.catalog import Catalog

    catalog = Catalog.open(idx)
    try:
        rows = catalog.videos_by_path()
        return {
            Path(path).name: [s.cue for s in catalog.cues_of(int(row["id"])) if s.cue.source == "speech"]
            for path, row in rows.items()
        }
    finally:
        catalog.close()


def test_transcribe_end_to_end_with_a_broken_sound_and_incremental_reruns(
    tmp_path: Path, tiny_ckpt: Path, tiny_whisper: Path, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    idx = tmp_path / "idx"
    first = _index(library, idx, tiny_ckpt, tiny_whisper)
    assert first.exit_code == 3, first.output  # the broken sound fails like any failed file; the run goes on
    report = json.loads(first.stdout)
    assert report["indexed"] == 3 and report["failed"] == 0  # every video's pictures are indexed
    assert report["transcribed"] == 1 and report["transcription_failed"] == 1
    assert calls.loads == 1 and len(calls.results) == 1  # talk only: silent has no audio stream

    seconds, transcript = calls.results[0]
    assert seconds == pytest.approx(TALK_S, abs=0.1)  # the sound reached the model whole, at 16 kHz
    cues = _speech_cues(idx)
    assert cues["talk.mp4"] == transcript.cues and cues["talk.mp4"]  # what the model said is what is stored
    assert all(c.source == "speech" and 0 <= c.start <= c.end <= TALK_S for c in cues["talk.mp4"])
    assert cues["broken_sound.mp4"] == [] and cues["silent.mp4"] == []

    human = run(
        "index", str(library), "--index", str(idx), "--transcribe", "--speech-model", str(tiny_whisper),
        "--retry-failed",
    )  # fmt: skip
    assert human.exit_code == 3  # tried again, failed again
    assert "Transcribed 0 video(s), 0 without sound, 1 failed." in human.stdout
    assert f"transcription failed: {library / 'broken_sound.mp4'}: the audio cannot be decoded" in human.stderr
    calls.loads = 0
    calls.results.clear()

    again = _index(library, idx, tiny_ckpt, tiny_whisper)
    assert again.exit_code == 0, again.output  # nothing failed in this run: the failure is recorded, not retried
    assert json.loads(again.stdout)["transcribed"] == 0
    assert calls.loads == 0 and calls.results == []  # unchanged videos: no model loaded, nothing transcribed
    assert _speech_cues(idx)["talk.mp4"] == transcript.cues

    _clip(library / "talk.mp4", seed=7)  # new content: its pictures and its sound are indexed again
    changed = _index(library, idx, tiny_ckpt, tiny_whisper)
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["indexed"] == 1 and json.loads(changed.stdout)["transcribed"] == 1
    assert len(calls.results) == 1
    assert _speech_cues(idx)["talk.mp4"] == calls.results[0][1].cues


def test_videos_with_subtitles_are_not_transcribed(
    tmp_path: Path, tiny_ckpt: Path, tiny_whisper: Path, monkeypatch: pytest.MonkeyPatch, catalog_backend: str | None
) -> None:
    from xclip_search.store.catalog import Catalog

    calls = Calls(monkeypatch)
    lib = tmp_path / "lib"
    lib.mkdir()
    _clip(lib / "talk.mp4", seed=1)
    idx = tmp_path / "idx"
    assert _index(lib, idx, tiny_ckpt, tiny_whisper).exit_code == 0
    assert len(calls.results) == 1

    (lib / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello there\n")  # it gains subtitles
    assert _index(lib, idx, tiny_ckpt, tiny_whisper).exit_code == 0
    assert len(calls.results) == 1  # not transcribed again, and its speech cues gave way to the subtitles
    assert _speech_cues(idx)["talk.mp4"] == []
    catalog = Catalog.open(idx)
    try:
        vid = int(catalog.videos_by_path()[str(lib / "talk.mp4")]["id"])
        assert [(s.cue.source, s.cue.text) for s in catalog.cues_of(vid)] == [("sidecar", "hello there")]
    finally:
        catalog.close()

    (lib / "talk.srt").unlink()  # subtitles gone: what is said is transcribed again
    assert _index(lib, idx, tiny_ckpt, tiny_whisper).exit_code == 0
    assert len(calls.results) == 2 and _speech_cues(idx)["talk.mp4"] == calls.results[1][1].cues


def test_without_transcribe_nothing_is_loaded_and_stale_speech_is_dropped(
    tmp_path: Path, tiny_ckpt: Path, tiny_whisper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    lib = tmp_path / "lib"
    lib.mkdir()
    _clip(lib / "talk.mp4", seed=1)
    idx = tmp_path / "idx"
    assert _index(lib, idx, tiny_ckpt, tiny_whisper).exit_code == 0
    assert _speech_cues(idx)["talk.mp4"]

    _clip(lib / "talk.mp4", seed=9)
    plain = run("index", str(lib), "--index", str(idx), "--workers", "1", "--json")
    assert plain.exit_code == 0 and "transcribed" not in json.loads(plain.stdout)  # not asked for
    assert calls.loads == 1  # only the first run's
    assert _speech_cues(idx)["talk.mp4"] == []  # they described the old content


def test_watch_with_transcribe_gives_a_copied_file_speech_cues(
    tmp_path: Path, tiny_ckpt: Path, tiny_whisper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``watch --transcribe --speech-model M`` hands both to every run it makes, as ``index`` does. The real
    command builds the watcher; a fake observer and clock stand in for inotify and time, so the copy is noticed
    through an event and the batch is due at once (no sleeping)."""
    import shutil
    import threading

    import indexer.watch
    from indexer.watch import FsEvent, Watcher

    from .test_watch import Clock, FakeObserver

    calls = Calls(monkeypatch)
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    lib.mkdir()
    talk = _clip(tmp_path / "talk.mp4", seed=1)  # written outside, then copied in once the watch runs
    clock = Clock()
    built: list[Watcher] = []

    def build(*args: object, **kwargs: object) -> Watcher:
        w = Watcher(*args, **kwargs, observer_factory=FakeObserver, clock=clock)  # type: ignore[arg-type]
        built.append(w)
        return w

    def drive(w: Watcher, stop: threading.Event) -> None:
        w.start()  # the start-up run: an empty folder, nothing to transcribe
        try:
            shutil.copy(talk, lib / "talk.mp4")
            w.feed([FsEvent("touched", str(lib / "talk.mp4"))])
            assert w.step() is None  # not settled yet
            clock.advance(w.settings.settle_s + w.settings.quiet_s)
            assert w.step() is not None
        finally:
            w.close()

    monkeypatch.setattr(indexer.watch, "Watcher", build)
    monkeypatch.setattr(Watcher, "run", drive)
    result = run(
        "watch", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--segment-seconds", "2",
        "--transcribe", "--speech-model", str(tiny_whisper), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = built[0].options
    assert options.transcribe and options.speech_model == str(tiny_whisper)
    start, changes = (json.loads(line) for line in result.stdout.splitlines())
    assert (start["trigger"], start["indexed"], start["transcribed"]) == ("start", 0, 0)
    assert (changes["trigger"], changes["indexed"], changes["transcribed"]) == ("changes", 1, 1)
    assert changes["transcription_failed"] == 0
    assert calls.loads == 1 and len(calls.results) == 1  # the start-up run loaded no speech model
    cues = _speech_cues(idx)["talk.mp4"]
    assert cues and cues == calls.results[0][1].cues  # what Whisper said about the copied file is in the catalog


def test_serve_watch_transcribe_hands_the_options_to_its_watcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --watch F --transcribe --speech-model M`` gives the server's watcher the same options as ``watch``;
    without ``--watch`` the two flags are refused in one line (there is nothing for them to apply to)."""
    import contextlib

    import indexer.watch
    import xclip_search.serve.runner

    lib = tmp_path / "lib"
    lib.mkdir()
    built: list[dict[str, object]] = []
    served: list[object] = []

    class Recorder:
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(kwargs)

    monkeypatch.setattr(indexer.watch, "Watcher", Recorder)
    monkeypatch.setattr(indexer.watch, "watching_in_background", lambda w: contextlib.nullcontext())
    monkeypatch.setattr(xclip_search.serve.runner, "run_server", lambda settings, on_ready: served.append(settings))
    idx = str(tmp_path / "idx")
    result = run("serve", "--index", idx, "--watch", str(lib), "--transcribe", "--speech-model", "tiny")
    assert result.exit_code == 0, result.output
    options = built[0]["options"]
    assert options.transcribe and options.speech_model == "tiny"  # type: ignore[attr-defined]
    assert len(served) == 1

    refused = run("serve", "--index", idx, "--transcribe")
    assert refused.exit_code == 1 and len(served) == 1
    assert "apply to the folders given with --watch" in refused.output


def test_audio_decodes_in_a_worker_and_a_broken_stream_is_an_error(tmp_path: Path) -> None:
    talk = _clip(tmp_path / "talk.mp4", seed=1)
    broken = _clip(tmp_path / "broken.mp4", seed=2, broken=True)
    silent = _clip(tmp_path / "silent.mp4", seed=3, audio=False)
    jobs = FrameJobs(1, timeout_s=60)
    try:
        sound = jobs.audio(str(talk))
        assert sound.has_stream and sound.samples.dtype == np.int16
        assert len(sound.samples) / SAMPLE_RATE == pytest.approx(TALK_S, abs=0.1)
        np.testing.assert_array_equal(sound.samples, decode_audio(str(talk)).samples)  # same as in-process
        assert not jobs.audio(str(silent)).has_stream
        with pytest.raises(VideoError, match="audio cannot be decoded"):
            jobs.audio(str(broken))
        assert jobs.audio(str(talk), max_seconds=2.0).truncated  # the cap holds
        with pytest.raises(VideoError):
            jobs.audio(str(tmp_path / "missing.mp4"))
    finally:
        jobs.close()


def test_audio_decoding_imports_no_torch(tmp_path: Path) -> None:
    talk = _clip(tmp_path / "talk.mp4", seed=1)
    code = (
        "import sys; import indexer.worker, indexer.framejobs; from indexer.audio import decode_audio\n"
        f"decode_audio({str(talk)!r}); sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_speech_model_names(tmp_path: Path, tiny_whisper: Path) -> None:
    from xclip_search.errors import CheckpointError, InvalidArgumentError
    from xclip_search.speech import resolve_speech_model, speech_model_source

    directory, source = resolve_speech_model(str(tiny_whisper))
    assert (directory / "model.bin").is_file() and source == str(tiny_whisper.resolve())
    assert resolve_speech_model(str(tiny_whisper))[0] == directory  # converted once
    assert resolve_speech_model(str(directory))[0] == directory  # a CTranslate2 directory loads as it is
    assert speech_model_source("base") == "base"
    with pytest.raises(CheckpointError, match="not found"):
        resolve_speech_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a Whisper model"):
        resolve_speech_model(str(tmp_path / "empty"))
    with pytest.raises(InvalidArgumentError):
        resolve_speech_model(" ")


def test_index_refuses_a_missing_speech_model_before_indexing(tmp_path: Path, tiny_ckpt: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    _clip(lib / "talk.mp4", seed=1)
    result = CliRunner().invoke(
        cli, ["index", str(lib), "--index", str(tmp_path / "idx"), "--model", str(tiny_ckpt), "--transcribe",
              "--speech-model", str(tmp_path / "no-such-model")],
    )  # fmt: skip
    assert result.exit_code != 0 and "Speech model directory not found" in result.output
    typo = CliRunner().invoke(
        cli, ["index", str(lib), "--index", str(tmp_path / "idx"), "--model", str(tiny_ckpt), "--transcribe",
              "--speech-model", "smal"],
    )  # fmt: skip
    assert typo.exit_code != 0 and "Unknown speech model 'smal'" in typo.output
    assert not (tmp_path / "idx").exists()


def test_phrases_are_cleaned_and_kept_within_the_sound() -> None:
    from types import SimpleNamespace

    from xclip_search.speech import SpeechSettings, clean_text

    assert clean_text("  hello\x07  wor\ufffdld \n again ") == "hello world again"

    class Fake:
        def transcribe(self, audio: np.ndarray, **kwargs: object) -> tuple[list[SimpleNamespace], SimpleNamespace]:
            said = [
                SimpleNamespace(text=" first line", start=-0.01, end=1.5),
                SimpleNamespace(text="\ufffd", start=1.5, end=2.0),  # nothing visible: dropped
                SimpleNamespace(text=" runs past the end", start=3.0, end=29.0),  # clamped to the 4 s of sound
                SimpleNamespace(text=" after the end", start=12.0, end=14.0),  # dropped
            ]
            return said, SimpleNamespace(language="de")

    model = SpeechModel(Fake(), "fake", SpeechSettings())
    out = model.transcribe(np.zeros(4 * SAMPLE_RATE, np.float32))
    assert out.language == "de"
    assert out.cues == [
        Cue("first line", 0.0, 1.5, "de", "speech"),
        Cue("runs past the end", 3.0, 4.0, "de", "speech"),
    ]
    assert model.transcribe(np.zeros(0, np.float32)).cues == []


def test_a_speech_model_without_transcription_is_refused_in_one_line(tmp_path: Path) -> None:
    """``--speech-model`` alone most likely means ``--transcribe`` was forgotten: refused before anything runs."""
    lib = tmp_path / "lib"
    lib.mkdir()
    _clip(lib / "talk.mp4", seed=1)
    result = run("index", str(lib), "--index", str(tmp_path / "idx"), "--speech-model", "tiny")
    assert result.exit_code == 1
    assert "transcription is off" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "idx").exists()  # refused before anything was created
