"""Search filters: ``FIELD OP VALUE`` strings parsed into SQL over a whitelist of catalog columns.

    xclip-search search "a goal" --filter "duration>=30" --filter "indexed>=2024-05-01" --tag soccer
    index.search("a goal", where=["duration>=30", "path~*/matches/*"])

Fields (a segment passes when every condition holds; repeated --path-prefix / --glob are alternatives):

    duration  video length, seconds (30, 90s, 2m, 1h)   start, end  the segment's own times, seconds
    path      = != ~ (glob: * ? [..]) ^= (prefix)       codec       = !=
    width, height, fps, size (bytes), video_id          numbers: = != < <= > >=
    indexed   when the video was indexed: ISO date or date-time (UTC unless it names a zone); < <= > >=
    tag       = (the segment carries a label saved by ``tag --index DIR --save``), != (it does not)

Each field maps to one column object and each value becomes a bound parameter: a hostile string can only fail
to parse (a one-line `InvalidArgumentError`) or compare unequal; it never becomes SQL.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select, true

from .errors import InvalidArgumentError
from .store.catalog import segments, tags, videos
from .store.sqlglob import glob_match

MAX_FILTERS = 64
MAX_FILTER_CHARS = 2000
MAX_VIDEO_IDS = 1000
_NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
_DATE_OPS = ("<", "<=", ">", ">=")
_TEXT_OPS = ("=", "!=")
_SYNTAX = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=|!=|==|\^=|=|<|>|~)\s*(.*?)\s*$", re.DOTALL)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(s|m|h)?$", re.IGNORECASE)
_CLOCK = re.compile(r"^([0-9]+):([0-5][0-9])(?::([0-5][0-9]))?(\.[0-9]+)?$")


@dataclass(frozen=True)
class _Field:
    column: Any
    kind: str  # seconds | number | integer | text | path | date | tag
    ops: tuple[str, ...]


FIELDS: dict[str, _Field] = {
    "duration": _Field(videos.c.duration_s, "seconds", _NUMERIC_OPS),
    "start": _Field(segments.c.start_s, "seconds", _NUMERIC_OPS),
    "end": _Field(segments.c.end_s, "seconds", _NUMERIC_OPS),
    "fps": _Field(videos.c.fps, "number", _NUMERIC_OPS),
    "width": _Field(videos.c.width, "integer", _NUMERIC_OPS),
    "height": _Field(videos.c.height, "integer", _NUMERIC_OPS),
    "size": _Field(videos.c.size, "integer", _NUMERIC_OPS),
    "video_id": _Field(segments.c.video_id, "integer", _NUMERIC_OPS),
    "codec": _Field(videos.c.codec, "text", _TEXT_OPS),
    "path": _Field(videos.c.path, "path", ("=", "!=", "~", "^=")),
    "indexed": _Field(videos.c.indexed_at, "date", _DATE_OPS),
    "tag": _Field(tags.c.label, "tag", _TEXT_OPS),
}
_EXAMPLE = "Use FIELD OP VALUE, e.g. 'duration>=30', 'path~*/holiday/*', 'tag=cooking'."


@dataclass(frozen=True)
class Condition:
    """One parsed comparison: a whitelisted field, an operator and a typed value."""

    field: str
    op: str
    value: Any

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


@dataclass(frozen=True)
class AnyOf:
    """Alternatives: at least one condition holds (repeated --path-prefix or --glob)."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class SearchFilter:
    """Conditions that all must hold; build with `SearchFilter.parse` (the only way values get checked)."""

    terms: tuple[Condition | AnyOf, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    @property
    def uses_tags(self) -> bool:
        return any(c.field == "tag" for t in self.terms for c in (t.conditions if isinstance(t, AnyOf) else (t,)))

    @classmethod
    def parse(
        cls,
        filters: str | Iterable[str] = (),
        *,
        path_prefix: str | Sequence[str] | None = None,
        glob: str | Sequence[str] | None = None,
        tags: str | Sequence[str] | None = None,
        indexed_after: str | None = None,
        indexed_before: str | None = None,
        video_ids: Sequence[int] = (),
        min_duration: float | None = None,
        max_duration: float | None = None,
    ) -> SearchFilter:
        """Parse ``FIELD OP VALUE`` strings and the convenience options into one filter.

        `video_ids` keeps any of those videos; `min_duration` / `max_duration` bound the video's length (s).
        """
        raw = [filters] if isinstance(filters, str) else list(filters)
        if len(raw) > MAX_FILTERS:
            raise InvalidArgumentError(f"Too many filters ({len(raw)}). At most {MAX_FILTERS} are supported.")
        terms: list[Condition | AnyOf] = [parse_condition(f) for f in raw]
        prefixes = _as_list(path_prefix)
        if prefixes:
            terms.append(AnyOf(tuple(_condition("path", "^=", _absolute_prefix(p)) for p in prefixes)))
        globs = _as_list(glob)
        if globs:
            terms.append(AnyOf(tuple(_condition("path", "~", g) for g in globs)))
        terms.extend(_condition("tag", "=", t) for t in _as_list(tags))
        if indexed_after is not None:
            terms.append(_condition("indexed", ">=", indexed_after))
        if indexed_before is not None:
            terms.append(_condition("indexed", "<", indexed_before))
        if video_ids:
            if len(video_ids) > MAX_VIDEO_IDS:
                raise InvalidArgumentError(f"Too many video ids ({len(video_ids)}). At most {MAX_VIDEO_IDS}.")
            terms.append(AnyOf(tuple(Condition("video_id", "=", float(int(v))) for v in video_ids)))
        terms.extend(_duration_bounds(min_duration, max_duration))
        return cls(tuple(terms))

    def clause(self) -> ColumnElement[bool] | None:
        """The SQL condition over ``segments JOIN videos`` (None when the filter is empty)."""
        if not self.terms:
            return None
        parts = [or_(*(_sql(c) for c in t.conditions)) if isinstance(t, AnyOf) else _sql(t) for t in self.terms]
        return and_(true(), *parts)

    def describe(self) -> list[str]:
        return [" or ".join(map(str, t.conditions)) if isinstance(t, AnyOf) else str(t) for t in self.terms]


def _duration_bounds(low: float | None, high: float | None) -> list[Condition]:
    for name, value in (("min_duration", low), ("max_duration", high)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise InvalidArgumentError(f"Invalid {name} ({value}). It must be a finite number >= 0.")
    if low is not None and high is not None and low > high:
        raise InvalidArgumentError(
            f"Invalid duration range ({low} > {high}). min_duration must not exceed max_duration."
        )
    out = [] if low is None else [Condition("duration", ">=", float(low))]
    return out + ([] if high is None else [Condition("duration", "<=", float(high))])


def no_saved_tags() -> InvalidArgumentError:
    """The error for a tag filter on an index without saved tags (checked before any model loads)."""
    return InvalidArgumentError(
        "This index has no saved tags to filter on", hint="Save some first: tag the whole index with saving on."
    )


def coerce_filter(where: SearchFilter | str | Iterable[str] | None) -> SearchFilter:
    """Accept a `SearchFilter`, one filter string or several (the Python API's ``where=``)."""
    if where is None:
        return SearchFilter()
    if isinstance(where, SearchFilter):
        return where
    return SearchFilter.parse(where)


def parse_condition(text: str) -> Condition:
    """``"duration>=30"`` -> Condition('duration', '>=', 30.0); a one-line error for anything else."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"Invalid filter ({text!r}). {_EXAMPLE}")
    shown = _shown(text)
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidArgumentError(f"Invalid filter ({shown}): longer than {MAX_FILTER_CHARS} characters")
    match = _SYNTAX.match(text)
    if not match:
        raise InvalidArgumentError(f"Invalid filter ({shown}). {_EXAMPLE}")
    name, op, value = match.group(1).lower(), match.group(2), match.group(3)
    return _condition(name, "=" if op == "==" else op, value, shown=shown)


def _condition(name: str, op: str, value: str, *, shown: str | None = None) -> Condition:
    shown = shown or _shown(f"{name}{op}{value}")
    spec = FIELDS.get(name)
    if spec is None:
        raise InvalidArgumentError(
            f"Invalid filter ({shown}): unknown field '{_shown(name)}'. Supported fields are {', '.join(FIELDS)}."
        )
    if op not in spec.ops:
        raise InvalidArgumentError(
            f"Invalid filter ({shown}): {name} supports the operators {' '.join(spec.ops)}, not {op}"
        )
    value = _unquote(value)
    if any(ord(ch) < 32 for ch in value):
        raise InvalidArgumentError(f"Invalid filter ({shown}): control characters are not allowed")
    if not value:
        raise InvalidArgumentError(f"Invalid filter ({shown}): no value after {op}")
    return Condition(name, op, _typed(spec.kind, value, shown))


def _typed(kind: str, value: str, shown: str) -> Any:
    if kind == "seconds":
        return _seconds(value, shown)
    if kind in ("number", "integer"):
        try:
            number = float(value)
        except ValueError:
            raise InvalidArgumentError(f"Invalid filter ({shown}): '{_shown(value)}' is not a number") from None
        if not math.isfinite(number):
            raise InvalidArgumentError(f"Invalid filter ({shown}): '{_shown(value)}' is not a finite number")
        return number
    if kind == "date":
        return _iso_utc(value, shown)
    return value


def _seconds(value: str, shown: str) -> float:
    match = _DURATION.match(value)
    if match:
        return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[(match.group(2) or "").lower()]
    clock = _CLOCK.match(value)
    if clock:
        a, b, c, frac = clock.groups()
        parts = [int(a), int(b)] + ([int(c)] if c is not None else [])
        total = parts[0] * 3600 + parts[1] * 60 + parts[2] if len(parts) == 3 else parts[0] * 60 + parts[1]
        return total + (float(frac) if frac else 0.0)
    raise InvalidArgumentError(f"Invalid filter ({shown}): '{_shown(value)}' is not a time (30, 90s, 2m, 1:30)")


def _iso_utc(value: str, shown: str) -> str:
    """An ISO date or date-time as the catalog's UTC ISO-8601 text (which sorts as time)."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"Invalid filter ({shown}): '{_shown(value)}' is not an ISO date such as 2024-05-01 or 2024-05-01T12:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _sql(c: Condition) -> ColumnElement[bool]:
    spec = FIELDS[c.field]
    col = spec.column
    if spec.kind == "tag":
        has = exists(
            select(tags.c.segment_id).where(tags.c.segment_id == segments.c.id, tags.c.label == c.value)
        ).correlate(segments)
        return has if c.op == "=" else not_(has)
    if c.op == "~":
        # GLOB: case-sensitive with * ? [...], like shell patterns on a POSIX file system (a regex on PostgreSQL).
        return glob_match(col, c.value)
    if c.op == "^=":
        return func.substr(col, 1, len(c.value)) == c.value
    result: ColumnElement[bool] = {
        "=": lambda: col == c.value,
        "!=": lambda: col != c.value,
        "<": lambda: col < c.value,
        "<=": lambda: col <= c.value,
        ">": lambda: col > c.value,
        ">=": lambda: col >= c.value,
    }[c.op]()
    if c.op == "!=" or spec.kind == "date":
        result = and_(col.is_not(None), result)
    return result


def _absolute_prefix(prefix: str) -> str:
    """Paths are stored absolute; a relative or ``~`` prefix means the same place as it does in a shell."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise InvalidArgumentError("Invalid path prefix (empty)", argument="path_prefix")
    expanded = os.path.expanduser(prefix)
    absolute = os.path.abspath(expanded)
    # abspath drops a trailing separator; keep it so '/data/a/' does not match '/data/ab'.
    return absolute + os.sep if expanded.endswith(os.sep) and absolute != os.sep else absolute


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _shown(text: str, limit: int = 60) -> str:
    """A filter as quoted in an error: printable, one line, bounded."""
    safe = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


__all__ = ["FIELDS", "AnyOf", "Condition", "SearchFilter", "coerce_filter", "no_saved_tags", "parse_condition"]
