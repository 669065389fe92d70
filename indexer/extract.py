"""One file in, model inputs per segment out: what a decode worker does (no torch, no model).

probe -> plan segments -> sample X-CLIP's frame indices for each segment -> decode only those frames, one at a
time -> resize and crop each frame as it arrives. Segments come out one by one, so a worker never holds more
than one segment of a long video, and the consumer can encode the first segments while later ones decode.
Workers ship the cropped uint8 frames (4x fewer bytes than float pixels); `CropNormalizer` turns them into
pixel values on the model side, bit-identical to `xclip_search.pixels.normalize`.

decord decodes by default; when it fails (to open, or midway), PyAV tries the same file before it is marked
failed. A decoder switch midway starts the file over under a new `attempt` number, and the consumer drops
segments of earlier attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from xclip_search.errors import VideoError, VideoLimitError
from xclip_search.pixels import PixelConfig, normalize, resize_and_crop
from xclip_search.sampling import sample_frame_indices
from xclip_search.store.cues import Cue
from xclip_search.thumbnails import thumbnail_or_none

from . import shotpass
from .decoders import DEFAULT_DECODERS, FORWARD_ONLY, Decoder, VideoInfo, clean_message, get_decoder
from .fingerprint import content_hash
from .probe import Limits, Probe, probe
from .segments import DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_SECONDS, FIXED, Segmentation, SegmentPlan, plan_video
from .shots import Cut, detect_cuts
from .subtitles import fit_cues, read_embedded


@dataclass(frozen=True)
class ExtractSpec:
    """Everything a worker needs to turn a file into model inputs; travels to workers as JSON."""

    num_frames: int
    pixels: PixelConfig
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    max_segments: int = DEFAULT_MAX_SEGMENTS
    decoders: tuple[str, ...] = DEFAULT_DECODERS
    limits: Limits = field(default_factory=Limits)
    #: make a JPEG thumbnail of each segment's middle sampled frame, from the full-size decoded frame
    thumbnails: bool = True
    #: ``shots`` or ``fixed`` (see `indexer.segments`); indexing runs pass the index's settled `Segmentation`
    #: through `with_segmentation`. Fixed here, so a bare spec plans what it says: windows of `segment_seconds`.
    segments: str = FIXED
    min_shot_seconds: float = 1.0

    def __post_init__(self) -> None:
        self.segmentation  # noqa: B018  (validates the segmentation fields once, where the spec is made)

    @property
    def segmentation(self) -> Segmentation:
        return Segmentation(
            mode=self.segments,
            segment_seconds=self.segment_seconds,
            min_shot_seconds=self.min_shot_seconds,
            max_segments=self.max_segments,
        )

    def with_segmentation(self, settings: Segmentation) -> ExtractSpec:
        return replace(
            self,
            segments=settings.mode,
            segment_seconds=settings.segment_seconds,
            min_shot_seconds=settings.min_shot_seconds,
            max_segments=settings.max_segments,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_frames": self.num_frames,
            "pixels": self.pixels.to_dict(),
            "segment_seconds": self.segment_seconds,
            "max_segments": self.max_segments,
            "decoders": list(self.decoders),
            "limits": self.limits.to_dict(),
            "thumbnails": self.thumbnails,
            "segments": self.segments,
            "min_shot_seconds": self.min_shot_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractSpec:
        p = d["pixels"]
        pixels = PixelConfig(
            do_resize=bool(p["do_resize"]),
            resize=tuple(p["resize"]),
            resample=int(p["resample"]),
            do_center_crop=bool(p["do_center_crop"]),
            crop=(int(p["crop"][0]), int(p["crop"][1])),
            do_rescale=bool(p["do_rescale"]),
            rescale_factor=float(p["rescale_factor"]),
            do_normalize=bool(p["do_normalize"]),
            mean=(float(p["mean"][0]), float(p["mean"][1]), float(p["mean"][2])),
            std=(float(p["std"][0]), float(p["std"][1]), float(p["std"][2])),
        )
        return cls(
            num_frames=int(d["num_frames"]),
            pixels=pixels,
            segment_seconds=float(d["segment_seconds"]),
            max_segments=int(d["max_segments"]),
            decoders=tuple(str(x) for x in d["decoders"]),
            limits=Limits.from_dict(d["limits"]),
            thumbnails=bool(d.get("thumbnails", True)),
            segments=str(d.get("segments", FIXED)),
            min_shot_seconds=float(d.get("min_shot_seconds", 1.0)),
        )


@dataclass(frozen=True)
class SegmentCrops:
    """One segment's T frames, resized and cropped: ``(T, h, w, 3)`` uint8. `attempt` counts decoder switches.

    `thumbnail` is a JPEG of the segment's representative frame at its full aspect ratio (None when disabled
    or when encoding it failed: a thumbnail is never a reason to lose a segment).
    """

    attempt: int
    plan: SegmentPlan
    crops: np.ndarray
    thumbnail: bytes | None = None


@dataclass
class FileSummary:
    """What is known about a file once it is decoded (sent after its last segment)."""

    decoder: str
    info: VideoInfo
    codec: str | None
    duration_s: float
    segments: int
    warnings: int = 0
    notes: list[str] = field(default_factory=list)
    #: the cues of the text subtitle streams inside the file (`indexer.subtitles.read_embedded`)
    cues: list[Cue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileSummary:
        cues = [
            Cue(str(c["text"]), float(c["start"]), float(c["end"]), c["language"], "embedded")
            for c in d.get("cues") or []
        ]
        return cls(**{**d, "info": VideoInfo(**d["info"]), "notes": list(d["notes"]), "cues": cues})


class Extraction:
    """Decode one file segment by segment: iterate `segments()`, then read `summary`.

    Raises `VideoLimitError` (skip) or `VideoError` (failure, with every decoder's reason) from the iterator.
    """

    def __init__(
        self, path: str, spec: ExtractSpec, probed: Probe | None = None, on_frame: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self.spec = spec
        self._on_frame = on_frame or (lambda: None)
        self.probe = probed or probe(path, spec.limits)
        self.summary: FileSummary | None = None
        self._cuts: list[Cut] | None = None

    def _decoders(self) -> list[tuple[str, Decoder]]:
        if not self.probe.seekable:
            return [("pyav", FORWARD_ONLY)]
        return [(name, get_decoder(name)) for name in self.spec.decoders]

    def segments(self) -> Iterator[SegmentCrops]:
        notes: list[str] = []
        first = 0
        if shotpass.applies(self.spec.segmentation, self.spec.decoders, self.probe.seekable):
            one = shotpass.ShotPass(
                self.path,
                num_frames=self.spec.num_frames,
                pixels=self.spec.pixels,
                settings=self.spec.segmentation,
                limits=self.spec.limits,
                thumbnails=self.spec.thumbnails,
                on_frame=self._on_frame,
                fallback_size=(self.probe.width, self.probe.height),
            )
            try:
                for plan, crops, thumb in one.segments():
                    yield SegmentCrops(0, plan, crops, thumb)
            except shotpass.Abandoned as exc:
                # The two passes below give the same segments; what was sent (attempt 0) is dropped.
                self._cuts = exc.cuts
                first = 1
            else:
                result = one.result
                assert result is not None
                self._cuts = result.cuts
                self.summary = FileSummary(
                    decoder="pyav",
                    info=result.info,
                    codec=self.probe.codec,
                    duration_s=_duration(result.info, self.probe),
                    segments=result.segments,
                    notes=notes,
                    cues=self._text_streams(notes),
                )
                return
        for attempt, (name, decoder) in enumerate(self._decoders(), start=first):
            try:
                video = decoder.open(self.path)
            except VideoError as exc:
                notes.append(f"{name}: {exc}")
                continue
            try:
                info = video.info
                if not info.width or not info.height:
                    info = VideoInfo(info.num_frames, info.fps, self.probe.width, self.probe.height)
                self.spec.limits.check_frames(info)
                plans = self._plan(info, notes)
                for plan in plans:
                    crops, thumb = self._segment(video, plan)
                    yield SegmentCrops(attempt, plan, crops, thumb)
            except VideoLimitError:
                raise
            except VideoError as exc:
                notes.append(f"{name}: {exc}")
                continue
            finally:
                video.close()
            cues = self._text_streams(notes)
            self.summary = FileSummary(
                decoder=name,
                info=info,
                codec=self.probe.codec,
                duration_s=_duration(info, self.probe),
                segments=len(plans),
                warnings=video.warnings,
                notes=notes,
                cues=cues,
            )
            return
        raise VideoError("; ".join(notes) if notes else "no decoder available")

    def _text_streams(self, notes: list[str]) -> list[Cue]:
        """The cues of the file's text subtitle streams; a stream that cannot be read costs its cues (a note),
        never the file's frames."""
        try:
            cues = read_embedded(self.path, on_progress=self._on_frame)
        except Exception as exc:  # a damaged stream, an odd muxer: the video is still indexed
            notes.append(f"subtitle streams: {clean_message(exc)}")
            return []
        kept = fit_cues(cues)
        if len(kept) < len(cues):
            notes.append(f"subtitle streams: {len(cues) - len(kept)} of {len(cues)} cues left out (too much text)")
        return kept

    def _plan(self, info: VideoInfo, notes: list[str]) -> list[SegmentPlan]:
        """The file's segments; in shots mode after a cut-detection pass over small frames (`indexer.shots`),
        which ticks progress like any decoding. Detection that fails costs the shots, not the file: its
        segments are then fixed windows, with a note."""
        settings = self.spec.segmentation
        if settings.follows_shots and self._cuts is None:  # once per file, whichever decoder samples it
            try:
                # Files the one pass decodes are scored on the same exact frames when it had to give up.
                exact = shotpass.applies(settings, self.spec.decoders, self.probe.seekable)
                self._cuts = detect_cuts(self.path, exact=exact, on_frame=self._on_frame)
            except (VideoError, ValueError, OSError) as exc:
                notes.append(f"shot detection: {exc}; fixed windows")
                self._cuts = []
                return plan_video(info.num_frames, info.fps, settings, None)
        return plan_video(info.num_frames, info.fps, settings, self._cuts)

    def _segment(self, video: Any, plan: SegmentPlan) -> tuple[np.ndarray, bytes | None]:
        indices = sample_frame_indices(plan.frame_start, plan.frame_end, self.spec.num_frames)
        unique = sorted(set(indices))
        middle = indices[len(indices) // 2]  # = thumbnails.representative_frame_index, what the server falls back to
        thumb: bytes | None = None
        # Each decoded frame is resized as soon as it arrives (one full-size frame in memory) and once even if
        # the segment repeats it (segments shorter than T frames do).
        crops = {}
        for i, frame in zip(unique, video.iter_frames(unique), strict=False):
            crops[i] = resize_and_crop(frame[None], self.spec.pixels)[0]
            if i == middle and self.spec.thumbnails:
                thumb = thumbnail_or_none(frame)
            self._on_frame()
        if len(crops) != len(unique):
            raise VideoError(f"the decoder returned {len(crops)} of {len(unique)} frames")
        return np.stack([crops[i] for i in indices]), thumb


def _duration(info: VideoInfo, probed: Probe) -> float:
    return float(info.num_frames / info.fps if info.fps > 0 else probed.duration_s or 0.0)


@dataclass(frozen=True)
class Decoded:
    """A file decoded to the end: its hash and header, and its summary (None when only probed)."""

    content_hash: str
    probe: Probe
    summary: FileSummary | None


@dataclass(frozen=True)
class DecodeFailure:
    """A file that could not be decoded (`status` failed) or was refused by a limit (`status` skipped)."""

    status: str
    reason: str
    content_hash: str | None = None
    oom: bool = False  # the decoding process ran out of memory: its heap is in an unknown state


def decode_file(
    path: str, spec: ExtractSpec, *, probe_only: bool = False, on_frame: Callable[[], None] | None = None
) -> Iterator[SegmentCrops | Decoded | DecodeFailure]:
    """Hash, probe and decode one file: its segments, then exactly one `Decoded` or `DecodeFailure`.

    What a decode worker runs for each task, and the pool without workers: a bad file never raises here, and
    how an exception becomes a status and a reason is decided once, in `failure_of`.
    """
    digest: str | None = None
    try:
        digest = content_hash(path)
        job = Extraction(path, spec, on_frame=on_frame)
        if not probe_only:
            yield from job.segments()
        yield Decoded(digest, job.probe, job.summary)
    except Exception as exc:  # a bug or an unexpected library error costs this file only
        yield failure_of(exc, digest)


def failure_of(exc: Exception, content_hash: str | None = None) -> DecodeFailure:
    """How a file whose decoding raised `exc` is recorded."""
    if isinstance(exc, VideoLimitError):
        return DecodeFailure("skipped", str(exc), content_hash)
    if isinstance(exc, VideoError):
        return DecodeFailure("failed", str(exc), content_hash)
    if isinstance(exc, MemoryError):
        return DecodeFailure("failed", "out of memory", content_hash, oom=True)
    if isinstance(exc, OSError):
        return DecodeFailure("failed", f"cannot read the file: {exc.strerror or exc}", content_hash)
    return DecodeFailure("failed", f"{type(exc).__name__}: {clean_message(exc)}", content_hash)


class CropNormalizer:
    """Cropped uint8 frames ``(..., h, w, 3)`` to pixel values ``(..., 3, h, w)``, bit-identical to `normalize`.

    Rescale and normalize act on each value alone, per channel, so the result for the 256 possible values of
    each channel is computed once, with `normalize` itself, and frames are translated by table lookup: the
    same float32 values as the processor's float64 rescale, for a fraction of the time (this runs on the
    model's side, where every millisecond is taken from the model).
    """

    def __init__(self, cfg: PixelConfig) -> None:
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None, :, :]  # (1, 256, 3)
        self._table = normalize(levels, cfg)[:, 0, :]  # (3, 256): channel, value

    @property
    def table(self) -> np.ndarray:
        """The ``(3, 256)`` float32 pixel value of each channel level (`indexer.feed` does the lookup on a GPU)."""
        return self._table

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = np.empty((*crops.shape[:-3], 3, *crops.shape[-3:-1]), dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], crops[..., c], out=out[..., c, :, :])
        return out


@dataclass
class Extracted:
    """A whole decoded video in memory: metadata, its segments and pixel values ``(S, T, 3, H, W)`` float32."""

    path: str
    info: VideoInfo
    codec: str | None
    duration_s: float
    decoder: str
    segments: list[SegmentPlan]
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    warnings: int = 0
    thumbnails: list[bytes | None] = field(default_factory=list)


def extract(path: str, spec: ExtractSpec) -> Extracted:
    """Decode and preprocess one file in this process (tests, tools); raises `VideoError` on failure."""
    job = Extraction(path, spec)
    kept: list[SegmentCrops] = []
    for seg in job.segments():
        if kept and kept[-1].attempt != seg.attempt:
            kept = []
        kept.append(seg)
    summary = job.summary
    assert summary is not None
    return Extracted(
        path=path,
        info=summary.info,
        codec=summary.codec,
        duration_s=summary.duration_s,
        decoder=summary.decoder,
        segments=[s.plan for s in kept],
        pixels=CropNormalizer(spec.pixels)(np.stack([s.crops for s in kept])),
        thumbnails=[s.thumbnail for s in kept],
        notes=summary.notes,
        warnings=summary.warnings,
    )
