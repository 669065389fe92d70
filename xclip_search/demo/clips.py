"""Generated, captioned video clips for the bundled demonstration model.

The demo model (``xclip_search/assets/demo-model``) is trained and evaluated only on clips made here, and the
``xclip-search demo`` command indexes a longer video built here, so that the whole product can be run and
judged offline. A clip shows one or two flat shapes, each with a colour, a shape and a motion, over a varied
background, and is captioned in plain English, e.g. ``"red circle moving left"`` or ``"blue square growing and
yellow triangle blinking"``.

Everything a clip looks like is decided by its :class:`ClipSpec`; :func:`render_clip` is a pure function of
the spec (its pixel noise and texture come from ``spec.noise_seed``), so a spec written next to a clip
reproduces the clip exactly. Randomness only enters through :func:`random_spec`, which takes a
``numpy.random.Generator``, so a seed gives the same clips on every run and platform.

This module imports numpy and PIL only (PyAV lazily, inside :func:`write_mp4`): video-decoding worker
processes import it, and they must not load torch."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "BackgroundSpec",
    "Clip",
    "ClipSpec",
    "Scene",
    "SceneVideo",
    "ShapeSpec",
    "caption_for",
    "compose_spec",
    "make_clip",
    "make_scene_video",
    "random_spec",
    "render_clip",
    "shape_phrase",
    "write_mp4",
    "x264_options",
]

#: Base RGB of each colour word. Each shape's actual colour is jittered around its base (see ``random_spec``)
#: so that the model learns "red", not one RGB triple.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 185, 55),
    "blue": (40, 85, 230),
    "yellow": (240, 215, 35),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "blinking",
)
#: Unit direction (dx, dy) in image coordinates (y grows downwards) of the four translations.
_DIRECTIONS: dict[str, tuple[float, float]] = {
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
}
#: Per-channel jitter (±) applied to a colour's base RGB; small enough that no two colour words overlap.
_COLOUR_JITTER = 28
#: A background colour must be at least this far (RGB Euclidean) from the base of every colour word, so shapes
#: always stand out and colour words only ever name shapes, never the background.
_MIN_BACKGROUND_DISTANCE = 110.0
#: How often each background kind is drawn.
_BACKGROUND_WEIGHTS = {"solid": 0.4, "gradient": 0.3, "texture": 0.3}


@dataclass(frozen=True)
class ShapeSpec:
    """One moving shape. Positions and sizes are fractions of the frame side, so a spec renders at any size.

    ``x``/``y`` is the centre at the first frame, ``radius`` the size at the first frame (circumradius-like:
    a circle's radius, half a square's side times 1.15, a triangle's circumradius). ``travel`` is the distance
    moved over the clip for the four translations, and the final/initial size ratio for growing and shrinking.
    ``blink_cycles`` is the number of on/off cycles over the clip for blinking (the phase is set so that the 8
    frames X-CLIP samples always see the shape both on and off).
    """

    colour: str
    shape: str
    motion: str
    rgb: tuple[int, int, int]
    x: float
    y: float
    radius: float
    travel: float = 0.0
    blink_cycles: float = 2.0
    blink_phase: float = 0.0

    def centre_and_radius(self, u: float) -> tuple[float, float, float]:
        """Centre (x, y) and radius at clip time ``u`` in [0, 1] (fractions of the frame side)."""
        if self.motion in _DIRECTIONS:
            dx, dy = _DIRECTIONS[self.motion]
            return self.x + dx * self.travel * u, self.y + dy * self.travel * u, self.radius
        if self.motion == "growing":
            return self.x, self.y, self.radius * (1.0 + (self.travel - 1.0) * u)
        if self.motion == "shrinking":
            return self.x, self.y, self.radius / (1.0 + (self.travel - 1.0) * u)
        return self.x, self.y, self.radius

    def visible(self, u: float) -> bool:
        """Whether the shape is drawn at clip time ``u``; only blinking shapes are ever hidden."""
        if self.motion != "blinking":
            return True
        return math.floor(2.0 * self.blink_cycles * u + self.blink_phase) % 2 == 0


@dataclass(frozen=True)
class BackgroundSpec:
    """Background: ``kind`` is "solid", "gradient" (``rgb_a`` to ``rgb_b`` along ``angle``) or "texture"
    (smooth random blotches between the two colours, from the clip's noise seed)."""

    kind: str
    rgb_a: tuple[int, int, int]
    rgb_b: tuple[int, int, int]
    angle: float = 0.0
    texture_cells: int = 4


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip's pixels and caption."""

    shapes: tuple[ShapeSpec, ...]
    background: BackgroundSpec
    num_frames: int = 24
    size: int = 64
    noise_std: float = 4.0
    noise_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, written next to generated clips."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ClipSpec:
        """Inverse of :meth:`to_dict`."""
        shapes = tuple(ShapeSpec(**{**s, "rgb": tuple(s["rgb"])}) for s in data["shapes"])
        bg = data["background"]
        background = BackgroundSpec(**{**bg, "rgb_a": tuple(bg["rgb_a"]), "rgb_b": tuple(bg["rgb_b"])})
        rest = {k: v for k, v in data.items() if k not in ("shapes", "background")}
        return ClipSpec(shapes=shapes, background=background, **rest)


@dataclass
class Clip:
    """A rendered clip: ``frames`` is ``uint8[T, H, W, 3]`` (RGB)."""

    frames: np.ndarray
    caption: str
    spec: ClipSpec


@dataclass(frozen=True)
class Scene:
    """One scene of a :class:`SceneVideo`: frames ``[start_frame, end_frame)``, i.e. ``[start, end)``
    seconds."""

    start_frame: int
    end_frame: int
    start: float
    end: float
    caption: str
    spec: ClipSpec


@dataclass
class SceneVideo:
    """Several clips played one after another, with where each scene starts and ends."""

    frames: np.ndarray
    fps: float
    scenes: list[Scene] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.frames) / self.fps

    def scenes_json(self) -> list[dict[str, Any]]:
        """The scene list as plain dicts (``start``/``end`` in seconds), for a captions file."""
        return [
            {
                "start_frame": s.start_frame,
                "end_frame": s.end_frame,
                "start": s.start,
                "end": s.end,
                "caption": s.caption,
            }
            for s in self.scenes
        ]


# --------------------------------------------------------------------------------------------------- captions


def shape_phrase(shape: ShapeSpec) -> str:
    """``"red circle moving left"``: the caption of one shape, colour, shape word, motion."""
    return f"{shape.colour} {shape.shape} {shape.motion}"


def caption_for(spec: ClipSpec) -> str:
    """The canonical caption: each shape's phrase, in a fixed order (colour, then shape, then motion, as
    listed in ``COLOURS``/``SHAPES``/``MOTIONS``) joined by "and", so that two clips showing the same things
    always have equal captions whatever the shapes' positions."""
    order = sorted(
        spec.shapes,
        key=lambda s: (list(COLOURS).index(s.colour), SHAPES.index(s.shape), MOTIONS.index(s.motion)),
    )
    return " and ".join(shape_phrase(s) for s in order)


# ---------------------------------------------------------------------------------------------------- specs


def _jitter_rgb(rng: np.random.Generator, base: tuple[int, int, int]) -> tuple[int, int, int]:
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(base) + jitter, 0, 255))  # type: ignore[return-value]


def _background_colour(rng: np.random.Generator, avoid: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A random colour far from every colour in ``avoid`` (all colour words). Backgrounds are drawn from the
    whole RGB cube (darkened half of the time): greys, browns, purples, teals, pinks, oranges... so the model
    cannot rely on any one background, only on the shapes."""
    for _ in range(200):
        rgb = rng.integers(0, 256, size=3)
        if rng.random() < 0.5:
            rgb = (rgb * rng.uniform(0.15, 0.6)).astype(np.int64)
        if all(np.linalg.norm(rgb - np.array(a)) >= _MIN_BACKGROUND_DISTANCE for a in avoid):
            return tuple(int(v) for v in rgb)  # type: ignore[return-value]
    return (20, 20, 20) if max(sum(a) for a in avoid) > 300 else (200, 200, 200)


def _random_shape(rng: np.random.Generator, colour: str, shape: str, motion: str, scale: float) -> ShapeSpec:
    """A shape whose whole trajectory stays inside the frame (with a margin)."""
    radius = float(rng.uniform(0.13, 0.21) * scale)
    travel = 0.0
    blink_cycles, blink_phase = 2.0, 0.0
    max_radius = radius
    if motion in _DIRECTIONS:
        travel = float(rng.uniform(0.28, 0.55))
    elif motion == "growing":
        travel = float(rng.uniform(1.8, 2.6))
        radius = float(rng.uniform(0.07, 0.11) * scale)
        max_radius = radius * travel
    elif motion == "shrinking":
        travel = float(rng.uniform(1.8, 2.6))
        radius = float(rng.uniform(0.16, 0.26) * scale)
        max_radius = radius
    elif motion == "blinking":
        blink_cycles = float(rng.choice([1.5, 2.0, 2.5, 3.0]))
        blink_phase = float(rng.uniform(0.0, 0.4))
    margin = max_radius * 1.2 + 0.02
    if motion in _DIRECTIONS:
        travel = min(travel, max(0.2, 1.0 - 2 * margin))  # big shapes travel less, staying in frame
    lo_x, hi_x, lo_y, hi_y = margin, 1.0 - margin, margin, 1.0 - margin
    if motion in _DIRECTIONS:
        dx, dy = _DIRECTIONS[motion]
        # start far enough from the edge the shape moves towards
        if dx < 0:
            lo_x += travel
        elif dx > 0:
            hi_x -= travel
        if dy < 0:
            lo_y += travel
        elif dy > 0:
            hi_y -= travel
    x = float(rng.uniform(lo_x, max(lo_x, hi_x)))
    y = float(rng.uniform(lo_y, max(lo_y, hi_y)))
    return ShapeSpec(
        colour=colour,
        shape=shape,
        motion=motion,
        rgb=_jitter_rgb(rng, COLOURS[colour]),
        x=x,
        y=y,
        radius=radius,
        travel=travel,
        blink_cycles=blink_cycles,
        blink_phase=blink_phase,
    )


def _apart(a: ShapeSpec, b: ShapeSpec, steps: int = 9) -> bool:
    """True when the two shapes never overlap during the clip (so both stay fully visible)."""
    for k in range(steps):
        u = k / (steps - 1)
        ax, ay, ar = a.centre_and_radius(u)
        bx, by, br = b.centre_and_radius(u)
        if math.hypot(ax - bx, ay - by) < 1.15 * (ar + br) + 0.03:
            return False
    return True


def random_spec(
    rng: np.random.Generator,
    *,
    two_shape_prob: float = 0.25,
    num_frames: tuple[int, int] = (16, 32),
    size: int = 64,
    colour: str | None = None,
    shape: str | None = None,
    motion: str | None = None,
    motions: Sequence[str] | None = None,
    size_scale: float = 1.0,
    backgrounds: Sequence[str] = ("solid", "gradient", "texture"),
    max_noise: float = 10.0,
) -> ClipSpec:
    """Draw a random clip spec.

    One shape, or two (with probability ``two_shape_prob``) that differ in colour or shape so the caption is
    unambiguous and never overlap. ``colour``/``shape``/``motion`` pin the first shape's attributes (for
    evaluation sets such as "one shape moving left or right"); ``motions`` restricts the motions drawn.
    The frame count is uniform in ``num_frames`` (inclusive), so speeds vary as well as distances.
    ``size_scale``, ``backgrounds`` and ``max_noise`` make clips easier (bigger shapes, plain backgrounds, no
    noise) for the start of training; the defaults are the distribution the demo model is evaluated on.
    """
    n_frames = int(rng.integers(num_frames[0], num_frames[1] + 1))
    allowed_motions = tuple(motions) if motions is not None else MOTIONS
    n_shapes = 2 if (colour is None and shape is None and motion is None and rng.random() < two_shape_prob) else 1
    scale = (1.0 if n_shapes == 1 else 0.8) * size_scale
    shapes: list[ShapeSpec] = []
    for _attempt in range(100):
        shapes = []
        used: set[tuple[str, str]] = set()
        for i in range(n_shapes):
            while True:
                c = colour if (i == 0 and colour is not None) else str(rng.choice(list(COLOURS)))
                s = shape if (i == 0 and shape is not None) else str(rng.choice(SHAPES))
                if (c, s) not in used:
                    break
            used.add((c, s))
            m = motion if (i == 0 and motion is not None) else str(rng.choice(allowed_motions))
            shapes.append(_random_shape(rng, c, s, m, scale))
        if n_shapes == 1 or _apart(shapes[0], shapes[1]):
            break
    else:  # pragma: no cover - 100 failed placements is practically impossible
        shapes = shapes[:1]

    avoid = list(COLOURS.values())
    weights = np.array([_BACKGROUND_WEIGHTS[k] for k in backgrounds])
    kind = str(rng.choice(list(backgrounds), p=weights / weights.sum()))
    rgb_a = _background_colour(rng, avoid)
    rgb_b = _background_colour(rng, avoid) if kind != "solid" else rgb_a
    background = BackgroundSpec(
        kind=kind,
        rgb_a=rgb_a,
        rgb_b=rgb_b,
        angle=float(rng.uniform(0, 2 * math.pi)),
        texture_cells=int(rng.integers(2, 6)),
    )
    return ClipSpec(
        shapes=tuple(shapes),
        background=background,
        num_frames=n_frames,
        size=size,
        noise_std=float(rng.choice([0.0, rng.uniform(min(1.0, max_noise), max_noise)], p=[0.2, 0.8])),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def compose_spec(rng: np.random.Generator, phrases: Sequence[tuple[str, str, str]]) -> ClipSpec:
    """A clip showing exactly the given (colour, shape, motion) shapes (one or two, placed apart), over a random
    background: the held-out sets of concepts and of confusable two-shape captions (scripts/eval_concepts.py)."""
    base = random_spec(rng, colour=phrases[0][0], shape=phrases[0][1], motion=phrases[0][2])
    if len(phrases) == 1:
        return base
    scale = 0.8
    shapes: list[ShapeSpec] = []
    for _attempt in range(200):
        shapes = [_random_shape(rng, c, s, m, scale) for c, s, m in phrases]
        if all(_apart(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1 :]):
            break
    return dataclasses.replace(base, shapes=tuple(shapes))


# ------------------------------------------------------------------------------------------------ rendering


def _render_background(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    size = spec.size
    bg = spec.background
    a = np.array(bg.rgb_a, dtype=np.float32)
    b = np.array(bg.rgb_b, dtype=np.float32)
    if bg.kind == "solid":
        weight = np.zeros((size, size), dtype=np.float32)
    elif bg.kind == "gradient":
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        t = xx * math.cos(bg.angle) + yy * math.sin(bg.angle)
        weight = np.clip(t / 1.0 + 0.5, 0.0, 1.0)
    elif bg.kind == "texture":
        from PIL import Image

        cells = rng.random((bg.texture_cells, bg.texture_cells)).astype(np.float32)
        img = Image.fromarray((cells * 255).astype(np.uint8), mode="L").resize((size, size), Image.Resampling.BICUBIC)
        weight = np.asarray(img, dtype=np.float32) / 255.0
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    out = a[None, None, :] * (1.0 - weight[..., None]) + b[None, None, :] * weight[..., None]
    return out.astype(np.float32)


def _shape_alpha(kind: str, cx: float, cy: float, r: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a shape centred at (cx, cy) with size r, all in pixels."""
    if kind == "circle":
        dist = np.hypot(xx - cx, yy - cy) - r
    elif kind == "square":
        half = r / 1.15
        dist = np.maximum(np.abs(xx - cx), np.abs(yy - cy)) - half
    elif kind == "triangle":
        # upright equilateral triangle with circumradius r*1.1: signed distance to its three edges
        rr = r * 1.1
        inr = rr / 2.0  # inradius
        dist = np.full_like(xx, -np.inf)
        for angle in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            nx, ny = math.cos(angle), math.sin(angle)  # outward normals (y down: first edge is the base)
            dist = np.maximum(dist, (xx - cx) * nx + (yy - cy) * ny - inr)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return np.clip(0.5 - dist, 0.0, 1.0)


def render_clip(spec: ClipSpec, indices: Sequence[int] | None = None) -> np.ndarray:
    """Render ``spec`` as ``uint8[T, size, size, 3]``; a pure function of the spec.

    ``indices`` renders only those frames (training needs just the 8 that X-CLIP samples); every frame's pixel
    noise has its own seed, so frame ``k`` is identical whether rendered alone or with the whole clip.
    """
    size = spec.size
    background = _render_background(spec, np.random.default_rng(spec.noise_seed))
    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    wanted = list(range(spec.num_frames)) if indices is None else [int(k) for k in indices]
    frames = np.empty((len(wanted), size, size, 3), dtype=np.uint8)
    for out, k in enumerate(wanted):
        if not 0 <= k < spec.num_frames:
            raise IndexError(f"frame {k} outside a clip of {spec.num_frames} frames")
        u = k / (spec.num_frames - 1) if spec.num_frames > 1 else 0.0
        img = background.copy()
        for shape in spec.shapes:
            if not shape.visible((k + 0.5) / spec.num_frames):
                continue
            cx, cy, r = (v * size for v in shape.centre_and_radius(u))
            # only the shape's bounding box (every shape lies within 1.3 r of its centre) is composited
            x0, x1 = max(0, int(cx - 1.3 * r - 2)), min(size, int(cx + 1.3 * r + 3))
            y0, y1 = max(0, int(cy - 1.3 * r - 2)), min(size, int(cy + 1.3 * r + 3))
            if x0 >= x1 or y0 >= y1:
                continue
            alpha = _shape_alpha(shape.shape, cx, cy, r, xx[y0:y1, x0:x1], yy[y0:y1, x0:x1])[..., None]
            box = img[y0:y1, x0:x1]
            box += (np.array(shape.rgb, dtype=np.float32) - box) * alpha
        if spec.noise_std > 0:
            noise_rng = np.random.default_rng([spec.noise_seed, k])
            img += noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(spec.noise_std)
        frames[out] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


def make_clip(rng: np.random.Generator, spec: ClipSpec | None = None) -> Clip:
    """Render ``spec`` (or a new :func:`random_spec` drawn from ``rng``) with its caption."""
    if spec is None:
        spec = random_spec(rng)
    return Clip(frames=render_clip(spec), caption=caption_for(spec), spec=spec)


# ---------------------------------------------------------------------------------------- sampling and files


def x264_options(crf: int) -> dict[str, object]:
    """libx264 options that make an encode byte-identical from run to run: one thread and no macroblock tree
    (see :func:`write_mp4`). Every H.264 encode of generated clips uses them, the training script's augmentation
    included, so that training repeats step for step too."""
    return {"crf": str(crf), "threads": "1", "x264-params": "mbtree=0"}


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 12.0, crf: int = 23) -> None:
    """Write ``uint8[T, H, W, 3]`` RGB frames as an H.264 (yuv420p) mp4 with PyAV.

    H.264 is what users' videos are, so the demo and the evaluation go through a real codec (chroma
    subsampling, quantisation) rather than lossless frames. The output is byte-identical across runs, so
    evaluation figures repeat: one encoder thread, and no macroblock tree (``mbtree=0``). With x264's default
    mbtree, about 1 clip in 15 came out differently from one encode of the same frames to the next (PyAV 18.1,
    one thread, on this project's machine), which moved the demo model's recall@1 by up to 0.03 between runs
    of the same evaluation; asm off or ``tune=zerolatency`` also fixed it, at more cost to speed or quality."""
    from fractions import Fraction

    import av  # lazy: only writers need PyAV

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8[T, H, W, 3], got {frames.dtype}{list(frames.shape)}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError("H.264 yuv420p needs even width and height")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(crf)
        for frame in frames:
            packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(packet_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_scene_video(
    rng: np.random.Generator,
    num_scenes: int = 6,
    *,
    fps: float = 12.0,
    frames_per_scene: int | tuple[int, int] = 24,
    size: int = 64,
    specs: Sequence[ClipSpec] | None = None,
    **spec_kwargs: Any,
) -> SceneVideo:
    """A longer video of several scenes (clips played back to back), with each scene's frame range, time range
    (seconds, ``frame / fps``) and caption, so that a search over it can be checked against known time ranges.

    ``frames_per_scene`` is a fixed count or an inclusive range; ``specs`` gives the scenes explicitly (their
    own ``num_frames``/``size`` are then used, and all must share one size). Extra keyword arguments go to
    :func:`random_spec`.
    """
    if specs is None:
        lo, hi = (frames_per_scene, frames_per_scene) if isinstance(frames_per_scene, int) else frames_per_scene
        specs = [random_spec(rng, num_frames=(lo, hi), size=size, **spec_kwargs) for _ in range(num_scenes)]
    if len({s.size for s in specs}) > 1:
        raise ValueError("all scenes must have the same frame size")
    chunks: list[np.ndarray] = []
    scenes: list[Scene] = []
    start = 0
    for spec in specs:
        frames = render_clip(spec)
        end = start + len(frames)
        scenes.append(
            Scene(
                start_frame=start,
                end_frame=end,
                start=start / fps,
                end=end / fps,
                caption=caption_for(spec),
                spec=spec,
            )
        )
        chunks.append(frames)
        start = end
    return SceneVideo(frames=np.concatenate(chunks, axis=0), fps=fps, scenes=scenes)


def write_captions(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write caption rows (``file``, ``caption``, ``spec`` ...) as JSON, the format ``make_clips.py``
    emits."""
    Path(path).write_text(json.dumps(list(rows), indent=1) + "\n", encoding="utf-8")
