"""Synthetic videos with exact ground truth, for training and testing video segmentation.

Each video shows 1-4 textured shapes (ellipses, rectangles, polygons, smooth
blobs) that move, rotate and scale over a translating textured background.
The shapes have a depth order, so nearer ones occlude farther ones, and they
may enter or leave the frame. Ground truth is the *visible* part of every
object in every frame; the full (amodal) shapes are returned as well.

Everything is plain numpy and deterministic from an integer seed, so a
dataset is reproducible from its list of seeds. The simulated user's clicks on
these masks live in :mod:`sam2_core.clicks` (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .clicks import corrective_click, distance_transform, first_click, prompt_frame

__all__ = [
    "PATTERNS",
    "SHAPES",
    "SyntheticConfig",
    "SyntheticObject",
    "SyntheticVideo",
    "corrective_click",
    "distance_transform",
    "first_click",
    "generate_video",
    "prompt_frame",
]

SHAPES = ("ellipse", "rectangle", "polygon", "blob")
PATTERNS = ("solid", "stripes", "checker", "rings", "noise", "gradient")

_ANGLE_SAMPLES = 512  # samples of each shape's radial function r(theta) over one turn
_NOISE_GRID = 8  # cells per side of an object's periodic noise texture


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic videos look and move.

    Sizes are fractions of ``min(height, width)`` so one config scales with
    the frame; speeds are per frame.
    """

    height: int = 256
    width: int = 256
    num_frames: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_radius: float = 0.08  # object radius (largest extent from its centre)
    max_radius: float = 0.25
    max_speed: float = 0.03  # largest centre speed
    max_rotation: float = 0.06  # radians per frame
    max_scale_change: float = 0.6  # largest change of log(scale) over the video
    background_speed: float = 1.5  # pixels per frame, largest background translation speed
    pixel_noise: float = 0.0  # std of Gaussian noise added to every frame (0 = none)
    min_visible_pixels: int = 16  # every object shows at least this many pixels in some frame
    late_entries: float = 0.0  # chance that an object other than the first enters after frame 0

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_frames", "min_objects", "max_objects"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"SyntheticConfig.{name} must be a positive integer, got {value!r}"
                )
        if self.height < 16 or self.width < 16:
            raise ValueError(
                f"SyntheticConfig.height and width must be at least 16, got {self.height}x{self.width}"
            )
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"SyntheticConfig.min_objects ({self.min_objects}) exceeds max_objects ({self.max_objects})"
            )
        if self.max_objects > 254:
            raise ValueError(
                f"SyntheticConfig.max_objects must be at most 254, got {self.max_objects}"
            )
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError(
                f"SyntheticConfig needs 0 < min_radius <= max_radius, got {self.min_radius}, {self.max_radius}"
            )
        for name in (
            "max_speed",
            "max_rotation",
            "max_scale_change",
            "background_speed",
            "pixel_noise",
            "late_entries",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"SyntheticConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.min_visible_pixels < 1:
            raise ValueError(
                f"SyntheticConfig.min_visible_pixels must be >= 1, got {self.min_visible_pixels}"
            )
        if self.late_entries > 1:
            raise ValueError(
                f"SyntheticConfig.late_entries must be at most 1, got {self.late_entries}"
            )


@dataclass(frozen=True)
class SyntheticObject:
    """What one object is: its id, shape, texture, colours (2 x 3 uint8) and depth (0 = farthest)."""

    object_id: int
    shape: str
    pattern: str
    colors: np.ndarray
    depth: int


@dataclass
class SyntheticVideo:
    """A generated video and its ground truth.

    frames: T x H x W x 3 uint8 RGB.
    masks: O x T x H x W bool, the visible part of each object (after occlusion
        and cropping by the frame); row ``i`` belongs to ``object_ids[i]``.
    amodal_masks: O x T x H x W bool, each object's whole shape inside the frame.
    """

    frames: np.ndarray
    masks: np.ndarray
    object_ids: list[int]
    amodal_masks: np.ndarray
    objects: tuple[SyntheticObject, ...]
    seed: int


@dataclass
class _ObjectPlan:
    shape: str
    radial: np.ndarray  # (_ANGLE_SAMPLES,) r(theta), max 1
    pattern: str
    pattern_params: dict
    colors: np.ndarray  # (2, 3) float
    center: np.ndarray  # (T, 2) x, y in pixels
    scale: np.ndarray  # (T,) pixels per unit radius
    angle: np.ndarray  # (T,) radians


# ---------------------------------------------------------------------------------------------
# Generation


def generate_video(seed: int, config: SyntheticConfig | None = None) -> SyntheticVideo:
    """Generate one video with ground truth; the same seed and config give the same video."""
    config = config or SyntheticConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = _background_canvas(rng, config.height, config.width)
    bg_velocity = rng.uniform(-1.0, 1.0, size=2) * config.background_speed
    # Objects entering late (no extra random draws when late_entries is 0: old seeds stay put).
    late = [
        k > 0 and config.late_entries > 0 and rng.random() < config.late_entries
        for k in range(num_objects)
    ]
    plans = [_plan_object(rng, config, late[k]) for k in range(num_objects)]

    # Re-draw objects that end up (almost) never visible, e.g. hidden behind a
    # nearer one all along; a few tries keep the object count, after which
    # such an object is dropped.
    for _attempt in range(6):
        frames, labels, amodal = _render(plans, background, bg_velocity, config)
        areas = np.stack([(labels == k + 1).sum(axis=(1, 2)) for k in range(len(plans))])
        hidden = [k for k in range(len(plans)) if areas[k].max() < config.min_visible_pixels]
        if not hidden:
            break
        for k in hidden:
            plans[k] = _plan_object(rng, config, late[k])
    else:
        keep = [k for k in range(len(plans)) if k not in hidden]
        if not keep:
            raise ValueError(
                f"seed {seed}: no object could be made visible; check SyntheticConfig sizes"
            )
        frames, labels, amodal = _render([plans[k] for k in keep], background, bg_velocity, config)
        plans = [plans[k] for k in keep]

    if config.pixel_noise > 0:
        noisy = frames.astype(np.float32) + rng.normal(0.0, config.pixel_noise, size=frames.shape)
        frames = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    ids = np.arange(1, len(plans) + 1, dtype=np.uint8)
    masks = labels[None] == ids[:, None, None, None]
    objects = tuple(
        SyntheticObject(
            object_id=k + 1,
            shape=p.shape,
            pattern=p.pattern,
            colors=np.clip(np.rint(p.colors), 0, 255).astype(np.uint8),
            depth=k,
        )
        for k, p in enumerate(plans)
    )
    return SyntheticVideo(
        frames=frames,
        masks=masks,
        object_ids=[int(i) for i in ids],
        amodal_masks=amodal,
        objects=objects,
        seed=int(seed),
    )


def _plan_object(
    rng: np.random.Generator, config: SyntheticConfig, late: bool = False
) -> _ObjectPlan:
    """Draw one object's shape, texture and motion over the whole video; a ``late`` one is
    wholly outside the frame until an entry frame between T/6 and T/2, then comes in through
    an edge at a brisk speed."""
    T = config.num_frames
    side = min(config.height, config.width)
    t = np.arange(T, dtype=np.float64)

    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    radial = _radial_function(rng, shape)

    # Scale: a base radius, a slow drift and a small oscillation (in log space).
    base = rng.uniform(config.min_radius, config.max_radius) * side
    drift = rng.uniform(-1.0, 1.0) * config.max_scale_change
    wobble = rng.uniform(0.0, 0.25) * config.max_scale_change
    progress = t / max(T - 1, 1) - 0.5
    scale = base * np.exp(
        drift * progress
        + wobble * np.sin(rng.uniform(0.02, 0.15) * t + rng.uniform(0, 2 * math.pi))
    )

    # Motion: straight through an anchor point inside the frame at an anchor
    # time, plus a sideways sway. Fast objects cross the frame edge, so they
    # enter or leave during the video.
    anchor = np.array([rng.uniform(0.1, 0.9) * config.width, rng.uniform(0.1, 0.9) * config.height])
    anchor_t = rng.uniform(0, T - 1)
    heading = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    speed = rng.uniform(0.1, 1.0) * config.max_speed * side
    sway_size = rng.uniform(0.0, 0.04) * side
    sway = sway_size * np.sin(rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * math.pi))
    if late and speed > 0:
        speed = max(speed, 0.5 * config.max_speed * side)
        enter = rng.uniform(T / 6, T / 2)
        # Back from the anchor to the frame's edge, plus the largest extent and sway: the time
        # the object needs to come in fully from outside.
        reach = _distance_to_edge(anchor, -direction, config.width, config.height)
        anchor_t = enter + (reach + scale.max() + sway_size) / speed
    normal = np.array([-direction[1], direction[0]])
    center = anchor + np.outer((t - anchor_t) * speed, direction) + np.outer(sway, normal)

    angle = rng.uniform(0, 2 * math.pi) + rng.uniform(-1.0, 1.0) * config.max_rotation * t

    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    params = {
        "freq": rng.uniform(1.0, 3.0),
        "phase": rng.uniform(0, 2 * math.pi),
        "dir": rng.uniform(0, 2 * math.pi),
        "grid": rng.uniform(0.0, 1.0, size=(_NOISE_GRID, _NOISE_GRID)),
    }
    return _ObjectPlan(
        shape=shape,
        radial=radial,
        pattern=pattern,
        pattern_params=params,
        colors=_object_colors(rng),
        center=center,
        scale=scale,
        angle=angle,
    )


def _distance_to_edge(point: np.ndarray, direction: np.ndarray, width: int, height: int) -> float:
    """How far from ``point`` (inside the frame) along unit ``direction`` the frame's edge is."""
    reach = math.inf
    for value, step, size in ((point[0], direction[0], width), (point[1], direction[1], height)):
        if step > 0:
            reach = min(reach, (size - value) / step)
        elif step < 0:
            reach = min(reach, value / -step)
    return reach


def _radial_function(rng: np.random.Generator, shape: str) -> np.ndarray:
    """The shape's boundary as r(theta) at ``_ANGLE_SAMPLES`` angles in [-pi, pi), scaled to max 1."""
    theta = np.linspace(-math.pi, math.pi, _ANGLE_SAMPLES, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    if shape == "ellipse":
        b = rng.uniform(0.45, 1.0)
        r = b / np.sqrt((b * c) ** 2 + s**2)
    elif shape == "rectangle":
        b = rng.uniform(0.35, 1.0)
        with np.errstate(divide="ignore"):
            r = np.minimum(1.0 / np.abs(c), b / np.abs(s))
    elif shape == "polygon":
        n = int(rng.integers(3, 8))
        vertex_angles = np.sort(
            (np.arange(n) + rng.uniform(-0.2, 0.2, size=n)) * (2 * math.pi / n)
            + rng.uniform(0, 2 * math.pi)
        )
        vertex_angles = (vertex_angles + math.pi) % (2 * math.pi) - math.pi
        order = np.argsort(vertex_angles)
        vertex_angles = vertex_angles[order]
        radii = rng.uniform(0.6, 1.0, size=n)[order]
        pts = np.stack([radii * np.cos(vertex_angles), radii * np.sin(vertex_angles)], axis=1)
        # Edge k joins vertex k-1 and vertex k; the ray at theta crosses the
        # edge whose end vertex is the first one at a larger angle (wrapping).
        k = np.searchsorted(vertex_angles, theta) % n
        p0, p1 = pts[k - 1], pts[k]
        edge = p1 - p0
        num = p0[:, 0] * edge[:, 1] - p0[:, 1] * edge[:, 0]
        den = c * edge[:, 1] - s * edge[:, 0]
        r = num / den
    elif shape == "blob":
        r = np.ones_like(theta)
        for k in range(2, 6):
            r += rng.uniform(0.0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return (r / r.max()).astype(np.float64)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] to RGB in [0, 255] (any matching shapes; result ... x 3)."""
    h = np.asarray(h, dtype=np.float64) % 1.0
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    rgb = v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb * 255.0


def _object_colors(rng: np.random.Generator) -> np.ndarray:
    """Two saturated colours of nearby hues (the background is kept unsaturated)."""
    hue = rng.uniform()
    h = np.array([hue, hue + rng.uniform(-0.08, 0.08)])
    s = rng.uniform(0.6, 1.0, size=2)
    v = np.array([rng.uniform(0.55, 1.0), rng.uniform(0.35, 1.0)])
    return _hsv_to_rgb(h, s, v)


def _periodic_upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Smoothly interpolate a periodic gh x gw (x C) grid to height x width, wrapping at the edges."""

    def axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.arange(n_out) * (n_in / n_out)
        i0 = np.floor(pos).astype(np.int64)
        w = pos - i0
        w = w * w * (3.0 - 2.0 * w)  # smoothstep: no visible grid creases
        return i0 % n_in, (i0 + 1) % n_in, w

    r0, r1, wr = axis_weights(height, grid.shape[0])
    c0, c1, wc = axis_weights(width, grid.shape[1])
    extra = (None,) * (grid.ndim - 2)
    rows = (
        grid[r0] * (1 - wr)[(slice(None), None, *extra)]
        + grid[r1] * wr[(slice(None), None, *extra)]
    )
    return (
        rows[:, c0] * (1 - wc)[(None, slice(None), *extra)]
        + rows[:, c1] * wc[(None, slice(None), *extra)]
    )


def _background_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A periodic (tileable) smooth-noise texture in muted colours, H x W x 3 uint8."""
    hues = rng.uniform(size=3)
    palette = _hsv_to_rgb(hues, rng.uniform(0.0, 0.35, size=3), rng.uniform(0.2, 0.85, size=3))
    coarse = _periodic_upsample(
        rng.uniform(size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)))), height, width
    )
    medium = _periodic_upsample(
        rng.uniform(size=(int(rng.integers(6, 14)), int(rng.integers(6, 14)))), height, width
    )
    fine = _periodic_upsample(
        rng.uniform(-1, 1, size=(max(height // 4, 2), max(width // 4, 2))), height, width
    )
    canvas = palette[0] * (1 - coarse)[..., None] + palette[1] * coarse[..., None]
    canvas = canvas * (1 - 0.5 * medium)[..., None] + palette[2] * (0.5 * medium)[..., None]
    canvas += 14.0 * fine[..., None]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _pattern(plan: _ObjectPlan, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texture weight in [0, 1] at object-local coordinates (u, v), radius 1 = object's extent."""
    p = plan.pattern_params
    along = u * math.cos(p["dir"]) + v * math.sin(p["dir"])
    if plan.pattern == "solid":
        return 0.15 * (along + 1.0) * 0.5
    if plan.pattern == "stripes":
        return 0.5 + 0.5 * np.sin(2 * math.pi * p["freq"] * along + p["phase"])
    if plan.pattern == "checker":
        f = p["freq"] + 0.5
        return ((np.floor(u * f + p["phase"]) + np.floor(v * f)) % 2).astype(np.float64)
    if plan.pattern == "rings":
        return 0.5 + 0.5 * np.cos(2 * math.pi * p["freq"] * np.hypot(u, v) + p["phase"])
    if plan.pattern == "noise":
        return _sample_periodic(
            p["grid"], (u + 1.0) * (_NOISE_GRID / 2), (v + 1.0) * (_NOISE_GRID / 2)
        )
    if plan.pattern == "gradient":
        return np.clip((along + 1.0) * 0.5, 0.0, 1.0)
    raise ValueError(f"unknown pattern {plan.pattern!r}; expected one of {PATTERNS}")


def _sample_periodic(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of a periodic 2-D grid at float positions (x along columns)."""
    gh, gw = grid.shape
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = x - x0, y - y0
    xi, yi = x0.astype(np.int64) % gw, y0.astype(np.int64) % gh
    xj, yj = (xi + 1) % gw, (yi + 1) % gh
    top = grid[yi, xi] * (1 - wx) + grid[yi, xj] * wx
    bottom = grid[yj, xi] * (1 - wx) + grid[yj, xj] * wx
    return top * (1 - wy) + bottom * wy


@dataclass(frozen=True)
class ShapePixels:
    """The pixels a radial shape covers on one frame, within its bounding window.

    window: (y0, y1, x0, x1); inside: the window's pixels inside the shape (bool); u, v: the
    shape's own coordinates (unit = its scale) of those pixels, for textures; rho, radius:
    their distance from the centre and the shape's radius in their direction (same unit).
    """

    window: tuple[int, int, int, int]
    inside: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rho: np.ndarray
    radius: np.ndarray


def rasterise_shape(
    center: np.ndarray, scale: float, angle: float, closed: np.ndarray, height: int, width: int
) -> ShapePixels | None:
    """A shape of radial function ``closed`` (r(theta) sampled over one turn from -pi, first
    sample repeated at the end), centred at ``center`` (x, y), scaled and rotated, on a
    height x width frame; None when it covers no pixel of the frame."""
    cx, cy = center
    x0, x1 = max(int(math.floor(cx - scale)), 0), min(int(math.ceil(cx + scale)) + 1, width)
    y0, y1 = max(int(math.floor(cy - scale)), 0), min(int(math.ceil(cy + scale)) + 1, height)
    if x0 >= x1 or y0 >= y1 or scale <= 0:
        return None
    px = (np.arange(x0, x1) + 0.5 - cx)[None, :]
    py = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    ca, sa = math.cos(angle), math.sin(angle)
    u = (px * ca + py * sa) / scale
    v = (py * ca - px * sa) / scale
    rho2 = u * u + v * v
    near = rho2 <= 1.0
    if not near.any():
        return None
    un, vn = u[near], v[near]
    pos = (np.arctan2(vn, un) + math.pi) / (2 * math.pi / _ANGLE_SAMPLES)
    i = np.minimum(pos.astype(np.int64), _ANGLE_SAMPLES - 1)
    frac = pos - i
    r = closed[i] * (1 - frac) + closed[i + 1] * frac
    inside_near = rho2[near] <= r * r
    inside = np.zeros_like(near)
    inside[near] = inside_near
    return ShapePixels(
        (y0, y1, x0, x1),
        inside,
        un[inside_near],
        vn[inside_near],
        np.sqrt(rho2[near][inside_near]),
        r[inside_near],
    )


def _render(
    plans: list[_ObjectPlan],
    background: np.ndarray,
    bg_velocity: np.ndarray,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint objects back to front over the moving background.

    Returns frames (T x H x W x 3 uint8), the per-pixel label of the visible
    object (T x H x W uint8, 0 = background, k + 1 = plans[k]) and the amodal
    masks (O x T x H x W bool).
    """
    T, H, W = config.num_frames, config.height, config.width
    frames = np.empty((T, H, W, 3), dtype=np.uint8)
    labels = np.zeros((T, H, W), dtype=np.uint8)
    amodal = np.zeros((len(plans), T, H, W), dtype=bool)
    closed = [np.append(p.radial, p.radial[0]) for p in plans]  # for interpolation across +-pi
    for t in range(T):
        dy, dx = np.rint(bg_velocity[::-1] * t).astype(np.int64)
        frames[t] = np.roll(background, (int(dy), int(dx)), axis=(0, 1))
        for k, plan in enumerate(plans):
            shape = rasterise_shape(plan.center[t], plan.scale[t], plan.angle[t], closed[k], H, W)
            if shape is None:
                continue
            (y0, y1, x0, x1), inside = shape.window, shape.inside
            alpha = _pattern(plan, shape.u, shape.v)
            color = plan.colors[0] + alpha[:, None] * (plan.colors[1] - plan.colors[0])
            frames[t, y0:y1, x0:x1][inside] = np.clip(np.rint(color), 0, 255).astype(np.uint8)
            labels[t, y0:y1, x0:x1][inside] = k + 1
            amodal[k, t, y0:y1, x0:x1] = inside
    return frames, labels, amodal
