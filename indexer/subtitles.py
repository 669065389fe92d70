"""Text tracks of a video: sidecar subtitle files beside it and text subtitle streams inside it, as `Cue`s.

Sidecars are ``<stem>.<ext>`` or ``<stem>.<language>.<ext>`` next to the video (``movie.srt``, ``movie.en.vtt``,
``movie.pt-BR.ass``), parsed by pysubs2 (SubRip, WebVTT, ASS/SSA, SAMI, TTML): a maintained parser that copes
with the malformed files real libraries hold. Embedded streams (SubRip, mov_text, WebVTT, ASS in MP4/MKV/WebM)
are demuxed and decoded with PyAV by the decode workers, in the same pass that decodes the frames' file, so an
odd stream costs at most that file's subtitles (never the file: a failure becomes a note).

Torch-free: workers import this module.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xclip_search.store.cues import Cue

from .walk import is_video_name

#: extensions pysubs2 reads as text subtitles (VobSub ``.sub``/``.idx`` are images, MicroDVD ``.sub`` needs
#: the frame rate: neither is read)
SIDECAR_EXTENSIONS = (".srt", ".vtt", ".ass", ".ssa", ".smi", ".sami", ".ttml")
#: a sidecar larger than this is not parsed (a subtitle file of a long film is ~100 KB)
MAX_SIDECAR_BYTES = 20 << 20
#: at most this many cues per stream or file (a damaged stream must not flood the catalog)
MAX_CUES = 50_000
#: text decoders whose output is text (bitmap subtitles such as PGS or DVB are skipped)
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "mov_text", "webvtt", "ass", "ssa", "text", "microdvd", "mpl2"})

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_ASS_TAGS = re.compile(r"\{[^}]*\}")
_HTML_TAGS = re.compile(r"</?[A-Za-z][^>]*>")
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Sidecar:
    """A subtitle file beside a video: its path, the language its name gives (or None), and its stat stamp."""

    path: str
    language: str | None
    size: int
    mtime_ns: int


class SidecarFinder:
    """Finds the sidecars of videos, listing each directory once per run (a library has many per folder)."""

    def __init__(self) -> None:
        self._listings: dict[str, list[str]] = {}

    def _names(self, directory: str) -> list[str]:
        names = self._listings.get(directory)
        if names is None:
            try:
                names = [n for n in os.listdir(directory) if n.lower().endswith(SIDECAR_EXTENSIONS)]
            except OSError:
                names = []
            self._listings[directory] = names
        return names

    def find(self, video_path: str) -> list[Sidecar]:
        """The sidecars of `video_path`, by name; files that vanish or are not regular files are left out."""
        directory, name = os.path.split(video_path)
        stem = os.path.splitext(name)[0]
        found: list[Sidecar] = []
        for candidate in sorted(self._names(directory)):
            base, _ext = os.path.splitext(candidate)
            if base == stem:
                language = None
            elif base.startswith(stem + ".") and _LANGUAGE.match(base[len(stem) + 1 :]):
                language = base[len(stem) + 1 :].replace("_", "-")
            else:
                continue
            path = os.path.join(directory, candidate)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            found.append(Sidecar(path, language, st.st_size, st.st_mtime_ns))
        return found


def is_sidecar_name(path: str) -> bool:
    return path.lower().endswith(SIDECAR_EXTENSIONS)


def videos_of_sidecar(path: str) -> list[str]:
    """The videos beside sidecar `path` that it belongs to (same stem, or the stem before a language tag)."""
    directory, name = os.path.split(path)
    base = os.path.splitext(name)[0]
    stems = {base}
    head, dot, tail = base.rpartition(".")
    if dot and _LANGUAGE.match(tail):
        stems.add(head)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if is_video_name(n) and os.path.splitext(n)[0] in stems)


def sidecar_stamp(sidecars: Sequence[Sidecar]) -> str:
    """What a video's sidecar cues are made from: each file's name, size and mtime (stored with the cues)."""
    return json.dumps([[os.path.basename(s.path), s.size, s.mtime_ns] for s in sidecars], separators=(",", ":"))


def read_sidecar(sidecar: Sidecar) -> list[Cue]:
    """The cues of one sidecar file; raises `ValueError` or `OSError` on a file pysubs2 cannot read."""
    import pysubs2

    if sidecar.size > MAX_SIDECAR_BYTES:
        raise ValueError(f"{os.path.basename(sidecar.path)} is larger than {MAX_SIDECAR_BYTES >> 20} MB")
    with open(sidecar.path, "rb") as fh:
        raw = fh.read(MAX_SIDECAR_BYTES + 1)
    subs = pysubs2.SSAFile.from_string(_decode_text(raw), format_=_format_of(sidecar.path))
    cues: list[Cue] = []
    for event in subs.events:
        if event.is_comment or event.end < event.start:
            continue
        line = clean_text(event.plaintext)
        if line:
            cues.append(
                Cue(line, max(0, event.start) / 1000.0, max(0, event.end) / 1000.0, sidecar.language, "sidecar")
            )
        if len(cues) >= MAX_CUES:
            break
    if not subs.events and raw.strip():  # pysubs2 is lenient: say so when a non-empty file held no cue at all
        raise ValueError("no subtitle cue found in it")
    return cues


def _format_of(path: str) -> str | None:
    """pysubs2's format name for an extension (None: let it detect from the content)."""
    ext = os.path.splitext(path)[1].lower()
    return {
        ".srt": "srt",
        ".vtt": "vtt",
        ".ass": "ass",
        ".ssa": "ssa",
        ".smi": "sami",
        ".sami": "sami",
        ".ttml": "ttml",
    }.get(ext)


def _decode_text(raw: bytes) -> str:
    """Subtitle bytes as text: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252 (the usual
    legacy encoding of SRT files), and Latin-1 when even that fails (every byte decodes)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def clean_text(value: str) -> str:
    """A cue's displayable text: styling tags (ASS ``{...}``, HTML ``<i>``) removed, ASS line breaks as newlines,
    runs of spaces collapsed, blank lines dropped."""
    value = _ASS_TAGS.sub("", value).replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    value = _HTML_TAGS.sub("", value)
    lines = [_SPACES.sub(" ", line).strip() for line in value.splitlines()]
    return "\n".join(line for line in lines if line)


def read_embedded(path: str, on_progress: Callable[[], None] | None = None) -> list[Cue]:
    """Cues of every text subtitle stream in the container at `path` (none when it has no such stream).

    Demuxes only when a text subtitle stream exists; the packets' own times place each cue (a packet without a
    duration ends where the stream's next one starts). `on_progress` is called every few hundred packets, so the
    pool's timeout sees a long demux making progress. Raises `av.error.FFmpegError` or `OSError` on a bad file.
    """
    import av

    tick = on_progress or (lambda: None)
    with av.open(path) as container:
        streams = [s for s in container.streams.subtitles if _codec_name(s) in TEXT_SUBTITLE_CODECS]
        if not streams:
            return []
        pending: dict[int, tuple[float, float | None, str, str | None]] = {}
        cues: list[Cue] = []
        languages = {s.index: _language(s) for s in streams}

        def close(index: int, end: float | None) -> None:
            started = pending.pop(index, None)
            if started is None:
                return
            start, own_end, text, language = started
            stop = own_end if own_end is not None else end
            if stop is None or stop < start:
                stop = start
            if len(cues) < MAX_CUES * len(streams):  # milliseconds, as subtitle files count
                cues.append(Cue(text, round(start, 3), round(stop, 3), language, "embedded"))

        for n, packet in enumerate(container.demux(streams)):
            if n % 256 == 255:
                tick()
            if packet.pts is None or packet.stream.time_base is None:
                continue
            index = packet.stream.index
            start = max(0.0, float(packet.pts * packet.stream.time_base))
            close(index, start)
            lines = [clean_text(_subtitle_text(sub)) for sub in packet.decode()]
            text = "\n".join(line for line in lines if line)
            if not text:
                continue  # mov_text marks the end of a cue with an empty sample
            end = start + float(packet.duration * packet.stream.time_base) if packet.duration else None
            pending[index] = (start, end, text, languages[index])
        for index in list(pending):
            close(index, None)
    cues.sort(key=lambda c: (c.start, c.end))
    return cues


#: the text of a file's embedded cues that travels from a worker in one message (its header is capped)
MAX_EMBEDDED_TEXT_BYTES = 2 << 20


def fit_cues(cues: Sequence[Cue], budget: int = MAX_EMBEDDED_TEXT_BYTES) -> list[Cue]:
    """The first `cues` whose text fits `budget` bytes of UTF-8 (what a worker's answer can carry)."""
    kept: list[Cue] = []
    used = 0
    for cue in cues:
        used += len(cue.text.encode("utf-8")) + 64  # the text and the rest of its JSON
        if used > budget:
            break
        kept.append(cue)
    return kept


def _codec_name(stream: object) -> str:
    ctx = getattr(stream, "codec_context", None)
    return str(getattr(ctx, "name", "") or "")


def _language(stream: object) -> str | None:
    lang = getattr(stream, "language", None) or (getattr(stream, "metadata", None) or {}).get("language")
    return None if not lang or lang == "und" else str(lang)


def _subtitle_text(sub: object) -> str:
    """The text of one decoded subtitle: the ASS dialogue's text field (FFmpeg decodes every text format to
    ASS events), else its plain text."""
    dialogue = getattr(sub, "dialogue", None)
    if isinstance(dialogue, bytes) and dialogue:
        return dialogue.decode("utf-8", "replace")
    raw = getattr(sub, "text", None)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


__all__ = [
    "MAX_CUES",
    "SIDECAR_EXTENSIONS",
    "Sidecar",
    "SidecarFinder",
    "clean_text",
    "fit_cues",
    "is_sidecar_name",
    "read_embedded",
    "read_sidecar",
    "sidecar_stamp",
    "videos_of_sidecar",
]
