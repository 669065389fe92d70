"""Speech to timed text: Whisper through faster-whisper (CTranslate2), one `Cue` per phrase it transcribes.

Why faster-whisper and not transformers' Whisper: on this project's CPU machines it transcribes the same audio
4-6 times faster (``scripts/bench_speech.py``: real-time factor 0.08 against 0.48 for whisper-tiny's shape,
0.23 against 1.0 for whisper-base's, one thread, int8 against float32; the README has the table), and speech is
the costliest part of an index run with ``--transcribe``. Its timestamps come from Whisper's own timestamp
tokens, so each cue is a phrase with start and end seconds, as subtitles are.

A model is named like an X-CLIP checkpoint: a local directory, or a hub id fetched once (``--speech-model``):

- a faster-whisper size name (``tiny``, ``base``, ``small``, ``large-v3``, ...) or a CTranslate2 conversion on
  the hub (``Systran/faster-whisper-base``): loaded as it is;
- a transformers Whisper (``openai/whisper-tiny``, or any ``save_pretrained`` directory): converted once to
  CTranslate2 into ``$XDG_CACHE_HOME/xclip-search/whisper-ct2``.

The model's language detection runs per file (the cue's `language`), so a library in several languages needs
no setting. Silero voice activity detection (bundled with faster-whisper, offline) skips silence first: a
Whisper model left on music or silence invents text.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import download
from .errors import CheckpointError, DependencyError, InvalidArgumentError
from .store.cues import Cue

DEFAULT_SPEECH_MODEL = "base"
SAMPLE_RATE = 16_000
_CT2_FILES = ("*.json", "*.txt", "model.bin")
_TRANSFORMERS_FILES = ("*.json", "*.safetensors", "*.txt")
_HINT = "Name a faster-whisper size (tiny, base, small, ...), a hub id (openai/whisper-base) or a local directory."


@dataclass(frozen=True)
class SpeechSettings:
    """How to transcribe: beam width (1: greedy, what the measured speed assumes), voice activity detection,
    a fixed language (None: detected per file), CPU threads (None: all cores) and the device."""

    beam_size: int = 1
    vad: bool = True
    language: str | None = None
    threads: int | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Transcript:
    """What was said in one file: the detected language and one cue per phrase, in time order."""

    language: str | None
    cues: list[Cue]


class SpeechModel:
    """A loaded Whisper model; `source` names it in the catalog (a video transcribed by another is redone)."""

    def __init__(self, model: Any, source: str, settings: SpeechSettings) -> None:
        self._model = model
        self.source = source
        self.settings = settings

    def transcribe(self, waveform: np.ndarray) -> Transcript:
        """Phrases of a 16 kHz mono float32 `waveform`, with their start and end seconds."""
        if waveform.size == 0:
            return Transcript(None, [])
        s = self.settings
        segments, info = self._model.transcribe(
            np.ascontiguousarray(waveform, dtype=np.float32),
            language=s.language,
            beam_size=s.beam_size,
            vad_filter=s.vad,
            condition_on_previous_text=False,  # a mistake must not be carried into the next window
        )
        language = info.language or s.language
        duration = waveform.size / SAMPLE_RATE
        cues = []
        for seg in segments:
            text = clean_text(str(seg.text))
            # Whisper can stamp a phrase past the end of the sound (its window is padded to 30 s): clamp.
            start, end = max(0.0, float(seg.start)), min(float(seg.end), duration)
            if text and start < duration:
                cues.append(Cue(text, start, max(start, end), language, "speech"))
        return Transcript(language, cues)


def clean_text(text: str) -> str:
    """A phrase as stored: single spaces, no control characters, no U+FFFD (a token ending mid-character)."""
    kept = "".join(ch for ch in text if ch == " " or (ch.isprintable() and ch != "\ufffd"))
    return " ".join(kept.split())


def load_speech_model(model: str | None = None, settings: SpeechSettings | None = None) -> SpeechModel:
    """Load `model` (default `DEFAULT_SPEECH_MODEL`) for transcription; see the module docstring for names."""
    settings = settings or SpeechSettings()
    if settings.beam_size < 1:
        raise InvalidArgumentError(f"Invalid beam size ({settings.beam_size}). It must be at least 1.")
    try:
        import ctranslate2
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise DependencyError(
            "Speech transcription needs faster-whisper", hint="pip install 'xclip-search[speech]'"
        ) from exc
    directory, source = resolve_speech_model(model or DEFAULT_SPEECH_MODEL)
    threads = settings.threads or os.cpu_count() or 1
    compute = "int8" if settings.device == "cpu" else "default"
    try:
        loaded = WhisperModel(str(directory), device=settings.device, compute_type=compute, cpu_threads=threads)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(f"Cannot load the speech model {source}: {exc}".split("\n")[0], hint=_HINT) from exc
    # Whisper falls back to sampling when greedy decoding looks wrong (repetitive or improbable text); a fixed
    # seed makes a re-run write the same cues.
    ctranslate2.set_random_seed(0)
    return SpeechModel(loaded, source, settings)


def speech_model_source(model: str | None) -> str:
    """How the catalog names `model` without loading or fetching it: an absolute directory, or the name."""
    name = model or DEFAULT_SPEECH_MODEL
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def resolve_speech_model(model: str) -> tuple[Path, str]:
    """``(CTranslate2 directory, source)`` for a model name, fetching or converting it first when needed."""
    if not model or not model.strip():
        raise InvalidArgumentError("Empty speech model name", hint=_HINT, argument="speech_model")
    path = Path(model).expanduser()
    if path.is_dir():
        path, source = path.resolve(), str(path.resolve())
    elif path.exists() or model.startswith((".", "/", "~")):
        raise CheckpointError(f"Speech model directory not found: {model}", hint=_HINT)
    else:
        path, source = _fetch(model), model
    if (path / "model.bin").is_file():
        return path, source
    if _is_transformers_whisper(path):
        return _converted(path), source
    raise CheckpointError(f"{path} is not a Whisper model (no model.bin, no Whisper config.json)", hint=_HINT)


def _fetch(name: str) -> Path:
    from faster_whisper import available_models, download_model

    if name in available_models():
        try:
            return Path(download_model(name))
        except Exception as exc:  # the hub client's errors (offline, not found) differ by version
            raise CheckpointError(f"Cannot fetch the speech model {name}: {type(exc).__name__}", hint=_HINT) from exc
    directory, _, _ = download(name, None, _CT2_FILES + _TRANSFORMERS_FILES, hint=_HINT)
    return directory


def _is_transformers_whisper(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "whisper" and any(path.glob("*.safetensors"))


def cache_dir() -> Path:
    """Where converted models are kept: ``$XDG_CACHE_HOME/xclip-search/whisper-ct2`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "xclip-search" / "whisper-ct2"


def _converted(source: Path) -> Path:
    """A transformers Whisper converted to CTranslate2, once per version of its files (keyed by their names,
    sizes and modification times); a half-written conversion is never used."""
    key = hashlib.sha256(str(source).encode())
    for f in sorted(source.iterdir()):
        if f.is_file():
            st = f.stat()
            key.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = cache_dir() / key.hexdigest()[:24]
    if (out / "model.bin").is_file():
        return out
    from ctranslate2.converters import TransformersConverter
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the converter loads the weights through transformers

    keep = [n for n in ("tokenizer.json", "preprocessor_config.json") if (source / n).is_file()]
    partial = out.with_name(out.name + f".partial-{os.getpid()}")
    try:
        TransformersConverter(str(source), copy_files=keep).convert(str(partial), force=True)
    except Exception as exc:  # the converter raises whatever transformers or torch raise
        raise CheckpointError(f"Cannot convert {source} for faster-whisper: {exc}".split("\n")[0], hint=_HINT) from exc
    if out.exists():  # another process converted the same files meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        os.replace(partial, out)
    return out
