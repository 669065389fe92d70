"""Speech transcription in an indexing run (``index --transcribe``): what was said, as "speech" cues.

After the run's videos are committed, each indexed video under the run's paths that has no text track (no
sidecar or embedded subtitle cues) and was not transcribed before at its current content by the same model has
its sound decoded in an isolated decode worker (`framejobs`, `audio`: no torch, memory cap, timeout with
progress) and transcribed in this process (`xclip_search.speech`). Its cues replace the video's old speech
cues in one transaction, with a stamp naming the model and the content hash, so:

- a re-run over an unchanged library transcribes nothing (and loads no speech model);
- a changed video (new content hash) or another ``--speech-model`` is transcribed again;
- a video whose sound cannot be decoded is recorded with the reason and counted as failed (the run goes on
  and exits 3, like any failed file); later runs leave it alone until ``--retry-failed``;
- a video without an audio stream is recorded as having none (no cues), and not decoded again;
- a video that gained subtitles loses its speech cues (its text tracks say what is said).

Without ``--transcribe`` nothing is transcribed, but speech cues of a video whose content changed since are
dropped: they describe another video. The next audio file is decoded while the current one is transcribed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from xclip_search.errors import CheckpointError, DependencyError, InvalidArgumentError, VideoError
from xclip_search.speech import DEFAULT_SPEECH_MODEL, SpeechModel, SpeechSettings, speech_model_source
from xclip_search.store.catalog import INDEXED, Catalog
from xclip_search.store.cues import CueSource

from .audio import MAX_AUDIO_S, as_float
from .framejobs import FrameJobs
from .pool import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S
from .protocol import Audio

TRANSCRIBED, NO_AUDIO, FAILED = "transcribed", "no audio", "failed"
TEXT_TRACKS: tuple[CueSource, ...] = ("sidecar", "embedded")


@dataclass(frozen=True)
class SpeechOptions:
    """Whether to transcribe, with which model (a name, hub id or directory; None: `DEFAULT_SPEECH_MODEL`),
    how, and the decode worker's limits."""

    transcribe: bool = False
    model: str | None = None
    settings: SpeechSettings = field(default_factory=SpeechSettings)
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_seconds: float = MAX_AUDIO_S
    retry_failed: bool = False


@dataclass(frozen=True)
class SpeechOutcome:
    """One video's line in the run's report: transcribed (with its cue count), no audio, or failed (why)."""

    path: str
    status: str
    reason: str | None = None
    cues: int = 0


@dataclass(frozen=True)
class _Stamp:
    """What a video's speech cues were made from (`cue_tracks.stamp`, as JSON)."""

    model: str
    content: str
    failed: str | None = None

    def dump(self) -> str:
        return json.dumps({"model": self.model, "content": self.content, "failed": self.failed}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> _Stamp | None:
        try:
            d = json.loads(text)
            return cls(str(d["model"]), str(d["content"]), None if d.get("failed") is None else str(d["failed"]))
        except (ValueError, TypeError, KeyError):
            return None  # unreadable: transcribed again


@dataclass(frozen=True)
class _Todo:
    video_id: int
    path: str
    stamp: _Stamp


def check_speech(options: SpeechOptions) -> None:
    """Refuse, before anything runs, a transcription that cannot happen: faster-whisper missing, a model named
    as a path that is not a directory, or a name that is neither a faster-whisper size nor a hub id; and a
    speech model named without transcription (nothing would use it)."""
    if not options.transcribe:
        if options.model is not None:  # most likely --transcribe was forgotten: say so rather than ignore it
            raise InvalidArgumentError(
                f"A speech model ({options.model}) was given but transcription is off: nothing would use it",
                hint="Turn transcription on too, or leave the speech model out.",
            )
        return
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None:
        raise DependencyError("Speech transcription needs faster-whisper", hint="pip install 'xclip-search[speech]'")
    name = options.model or DEFAULT_SPEECH_MODEL
    if Path(name).expanduser().is_dir():
        return
    if name.startswith((".", "/", "~")):
        raise CheckpointError(f"Speech model directory not found: {name}")
    from faster_whisper import available_models

    if "/" not in name and name not in available_models():  # not a hub id either: a typo
        raise CheckpointError(
            f"Unknown speech model {name!r}",
            hint=f"Use one of {', '.join(available_models())}, a hub id (openai/whisper-small) or a directory.",
        )


class SpeechProgress(Protocol):
    """Receives transcription progress; the command line draws a bar from it."""

    def speech_start(self, total_files: int) -> None:
        """`total_files` videos are about to be transcribed (the model loads first)."""

    def speech_done(self, outcome: SpeechOutcome) -> None: ...


def update_speech(
    catalog: Catalog,
    paths: Sequence[str],
    options: SpeechOptions,
    *,
    load: Callable[[], SpeechModel] | None = None,
    progress: SpeechProgress | None = None,
) -> list[SpeechOutcome]:
    """Bring the speech cues of the indexed videos at `paths` up to date (see the module docstring); returns
    one outcome per video transcribed or failed now. `load` loads the model (default: `options.model`), only
    when some video needs it."""
    stamps = {vid: _Stamp.parse(text) for vid, text in catalog.cue_stamps("speech").items()}
    if not options.transcribe and not stamps:  # the usual run: nothing to transcribe, nothing to check
        return []
    rows = [r for r in catalog.videos_by_path(list(paths)).values() if r["status"] == INDEXED]
    with_text = catalog.videos_with_cues(TEXT_TRACKS)
    source = speech_model_source(options.model)
    todo: list[_Todo] = []
    for row in rows:
        vid, content = int(row["id"]), str(row["content_hash"] or "")
        old = stamps.get(vid)
        if vid in with_text:
            if vid in stamps:
                catalog.drop_cues([vid], "speech")
            continue
        if not options.transcribe:
            if vid in stamps and (old is None or old.content != content):
                catalog.drop_cues([vid], "speech")
            continue
        want = _Stamp(source, content)
        same = old is not None and (old.model, old.content) == (want.model, want.content)
        if same and old is not None and (old.failed is None or not options.retry_failed):
            continue
        todo.append(_Todo(vid, str(row["path"]), want))
    if not todo:
        return []
    if progress is not None:
        progress.speech_start(len(todo))
    model = (load or (lambda: _load(options)))()
    outcomes = []
    for item, sound in _sounds(todo, options):
        outcomes.append(_store(catalog, item, sound, model))
        if progress is not None:
            progress.speech_done(outcomes[-1])
    return outcomes


def _load(options: SpeechOptions) -> SpeechModel:
    from xclip_search.speech import load_speech_model

    return load_speech_model(options.model or DEFAULT_SPEECH_MODEL, options.settings)


def _sounds(todo: list[_Todo], options: SpeechOptions) -> Iterator[tuple[_Todo, Audio | VideoError]]:
    """Each video's sound, decoded one ahead in a worker process while the caller transcribes the current one."""
    jobs = FrameJobs(1, timeout_s=options.timeout_s, memory_mb=options.memory_mb)

    def decode(path: str) -> Audio | VideoError:
        try:
            return jobs.audio(path, options.max_seconds)
        except VideoError as exc:
            return exc

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="audio-decode") as pool:
            ahead: Future[Audio | VideoError] = pool.submit(decode, todo[0].path)
            for i, item in enumerate(todo):
                sound = ahead.result()
                if i + 1 < len(todo):
                    ahead = pool.submit(decode, todo[i + 1].path)
                yield item, sound
    finally:
        jobs.close()


def _store(catalog: Catalog, item: _Todo, sound: Audio | VideoError, model: SpeechModel) -> SpeechOutcome:
    if isinstance(sound, VideoError):
        reason = str(sound)
        failed = _Stamp(item.stamp.model, item.stamp.content, reason)
        catalog.replace_cues(item.video_id, "speech", [], failed.dump())
        return SpeechOutcome(item.path, FAILED, reason)
    if not sound.has_stream:
        catalog.replace_cues(item.video_id, "speech", [], item.stamp.dump())
        return SpeechOutcome(item.path, NO_AUDIO)
    try:
        transcript = model.transcribe(as_float(sound.samples))
    except (RuntimeError, ValueError) as exc:  # the model's runtime on this sound; the next file may do better
        reason = f"transcription failed: {exc}".split("\n")[0]
        catalog.replace_cues(item.video_id, "speech", [], _Stamp(item.stamp.model, item.stamp.content, reason).dump())
        return SpeechOutcome(item.path, FAILED, reason)
    count = catalog.replace_cues(item.video_id, "speech", transcript.cues, item.stamp.dump())
    note = "cut at the audio limit" if sound.truncated else None
    return SpeechOutcome(item.path, TRANSCRIBED, note, count)
