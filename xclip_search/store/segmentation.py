"""How an index cuts videos into moments: the settings it was built with, validated once and recorded in it.

Every segment of one index must come from the same settings: a search widens hits over neighbouring segments,
`similar --at` and `tag` cut a new file the way the index did, and a re-run must not mix 10-second windows with
shots. So the settings are a typed record, checked here (and nowhere else) and stored in the catalog's ``meta``
table beside the model identity; a run that asks for other settings on an existing index is refused.

Indexes built before the settings were recorded used fixed 10-second windows (the only mode there was);
`read_segmentation` reports them as that, marked as not recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import IndexMismatchError, InvalidArgumentError

if TYPE_CHECKING:
    from .catalog import Catalog

SHOTS, FIXED = "shots", "fixed"
MODES = (SHOTS, FIXED)
DEFAULT_MODE = SHOTS
DEFAULT_SEGMENT_SECONDS = 10.0
DEFAULT_MIN_SHOT_SECONDS = 1.0
DEFAULT_MAX_SEGMENTS = 360
#: Bounds of a window length (0 means the whole video): below a tenth of a second X-CLIP's T frames repeat
#: one frame; above an hour a "moment" says nothing about where in the video it is.
MIN_SEGMENT_SECONDS, MAX_SEGMENT_SECONDS = 0.1, 3600.0
MAX_MIN_SHOT_SECONDS = 60.0
MAX_MAX_SEGMENTS = 100_000
META_KEY = "segmentation"


@dataclass(frozen=True)
class Segmentation:
    """How videos are cut into segments; constructing one validates it (NaN and infinities are refused).

    `mode` ``shots``: segments follow detected hard cuts, a shot longer than `segment_seconds` is split into
    near-equal windows of at most that length, and shots shorter than `min_shot_seconds` join a neighbour.
    `mode` ``fixed``: consecutive windows of `segment_seconds` (a short tail joins the window before it).
    ``segment_seconds == 0`` means one segment per whole video in either mode. `max_segments` caps the
    segments of one video (longer windows beyond it, never dropped footage).
    """

    mode: str = DEFAULT_MODE
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    min_shot_seconds: float = DEFAULT_MIN_SHOT_SECONDS
    max_segments: int = DEFAULT_MAX_SEGMENTS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgumentError(f"Invalid segmentation mode ({self.mode}). Use one of {', '.join(MODES)}.")
        s = self.segment_seconds
        if (
            not isinstance(s, (int, float))
            or not math.isfinite(s)
            or (s != 0 and not MIN_SEGMENT_SECONDS <= s <= MAX_SEGMENT_SECONDS)
        ):
            raise InvalidArgumentError(
                f"Invalid segment length ({s} s). Use 0 (one segment per whole video) or "
                f"{MIN_SEGMENT_SECONDS:g} to {MAX_SEGMENT_SECONDS:g} seconds."
            )
        m = self.min_shot_seconds
        if not isinstance(m, (int, float)) or not math.isfinite(m) or not 0 <= m <= MAX_MIN_SHOT_SECONDS:
            raise InvalidArgumentError(
                f"Invalid minimum shot length ({m} s). Use 0 to {MAX_MIN_SHOT_SECONDS:g} seconds."
            )
        n = self.max_segments
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MAX_SEGMENTS:
            raise InvalidArgumentError(f"Invalid max segments ({n}). Use 1 to {MAX_MAX_SEGMENTS}.")
        object.__setattr__(self, "segment_seconds", float(s))
        object.__setattr__(self, "min_shot_seconds", float(m))

    @property
    def whole_video(self) -> bool:
        return self.segment_seconds == 0

    @property
    def follows_shots(self) -> bool:
        """Whether cuts must be detected to plan this segmentation (shots mode with windows)."""
        return self.mode == SHOTS and not self.whole_video

    def describe(self) -> str:
        """One line for people: ``shots (windows of at most 10 s, shots under 1 s join a neighbour, ...)``."""
        if self.whole_video:
            return f"one segment per whole video ({self.mode})"
        cap = f"at most {self.max_segments} per video"
        if self.mode == FIXED:
            return f"fixed windows of {self.segment_seconds:g} s ({cap})"
        return (
            f"shots (split into windows of at most {self.segment_seconds:g} s; shots under "
            f"{self.min_shot_seconds:g} s join a neighbour; {cap})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "segment_seconds": self.segment_seconds,
            "min_shot_seconds": self.min_shot_seconds,
            "max_segments": self.max_segments,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segmentation:
        return cls(
            mode=str(d["mode"]),
            segment_seconds=float(d["segment_seconds"]),
            min_shot_seconds=float(d.get("min_shot_seconds", DEFAULT_MIN_SHOT_SECONDS)),
            max_segments=int(d["max_segments"]),
        )


#: What an index built before the settings were recorded used: fixed 10-second windows.
LEGACY = Segmentation(mode=FIXED)


@dataclass(frozen=True)
class SegmentationRequest:
    """Settings asked for by a run; None means "what the index records, else the default"."""

    mode: str | None = None
    segment_seconds: float | None = None
    min_shot_seconds: float | None = None
    max_segments: int | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def over(self, base: Segmentation) -> Segmentation:
        """`base` with the fields this request names replaced (validated)."""
        return replace(base, **self.given())


@dataclass(frozen=True)
class RecordedSegmentation:
    """An index's settings and whether they were recorded (False: an older index, assumed `LEGACY`)."""

    settings: Segmentation
    recorded: bool

    def describe(self) -> str:
        text = self.settings.describe()
        return text if self.recorded else f"{text}; not recorded (index built before settings were kept), assumed"


def read_segmentation(catalog: Catalog) -> RecordedSegmentation:
    """The settings the index of `catalog` was built with."""
    raw = catalog.get_meta(META_KEY)
    if raw is None:
        return RecordedSegmentation(LEGACY, recorded=False)
    return RecordedSegmentation(Segmentation.from_dict(json.loads(raw)), recorded=True)


def record_segmentation(catalog: Catalog, settings: Segmentation) -> None:
    catalog.set_meta(META_KEY, json.dumps(settings.to_dict(), sort_keys=True))


def settle_segmentation(
    catalog: Catalog | None, request: SegmentationRequest, *, where: str = "the index"
) -> Segmentation:
    """The settings a run uses on the index of `catalog` (None: a new index), recording them when new.

    A new index takes the request over the defaults. An existing one keeps what it records: a request that
    names another value is refused with the recorded one. An index from before the settings were recorded
    takes the request over `LEGACY` (what it was built with unless told otherwise) and records the result.
    """
    if catalog is None:
        return request.over(Segmentation())
    found = read_segmentation(catalog)
    if not found.recorded:
        settings = request.over(LEGACY)
        record_segmentation(catalog, settings)
        return settings
    settings = found.settings
    wanted = request.over(settings)
    if wanted != settings:
        differing = ", ".join(
            f"{k} {v!r} (recorded: {getattr(settings, k)!r})"
            for k, v in request.given().items()
            if getattr(settings, k) != getattr(wanted, k)
        )
        raise IndexMismatchError(
            f"{where} was built with {settings.describe()}; refusing {differing}",
            hint="Leave out the segmentation options to use the recorded ones, or build another index.",
        )
    return settings
