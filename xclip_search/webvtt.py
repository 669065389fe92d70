"""A video's cues as a WebVTT document: what the page's player shows as subtitles (``<track kind="subtitles">``).

Browsers read only WebVTT in a ``<track>``, whatever format the cues came from (SRT, ASS, a container stream,
a transcript), so the server writes one from the catalog's cues. Cue text is escaped (``&``, ``<``, ``>``) and
a line that would end the cue (a blank line, or one holding ``-->``) is defused, so no subtitle text can
break the document or inject markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from .store.cues import Cue


def timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)  # "-->" is already "--&gt;"


def webvtt(cues: Sequence[Cue]) -> str:
    """The WebVTT document of `cues` (in time order; every source and language together)."""
    parts = ["WEBVTT", ""]
    for cue in sorted(cues, key=lambda c: (c.start, c.end)):
        body = _escape(cue.text)
        if not body:
            continue
        end = max(cue.end, cue.start + 0.001)
        parts += [f"{timestamp(cue.start)} --> {timestamp(end)}", body, ""]
    return "\n".join(parts)


__all__ = ["timestamp", "webvtt"]
