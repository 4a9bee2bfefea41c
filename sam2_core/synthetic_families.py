"""Families of synthetic scenes, for training a tracker that generalises and for testing that
it does on scene families it never saw.

:mod:`sam2_core.synthetic` draws one kind of scene (``blobs`` here). A model trained on it
alone learns that generator, not tracking: it scores about 0.16 on textured ellipses,
rectangles and triangles over a smooth colourful background. The families below vary what
that generator keeps fixed: object and background textures and colours (saturated or not),
sizes, motion, distractors that are never labelled, occlusion, lighting over time, sensor
noise, blur and JPEG compression. Training families (``held_out=False``) randomise those
within ranges; held-out families use their own rendering rules and regimes outside those
ranges (bouncing motion over a static colourful texture, dark noisy flickering scenes,
outlined flat-colour cartoons), so their scores measure generalisation.

Every family is a deterministic function of an integer seed and the frame size, and returns
the :class:`~sam2_core.synthetic.SyntheticVideo` record of ``generate_video``, so training
clips, manifests and evaluation reuse everything written for that generator. Plain numpy
(and Pillow for JPEG).
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .synthetic import (
    _ANGLE_SAMPLES,
    SyntheticConfig,
    SyntheticObject,
    SyntheticVideo,
    _background_canvas,
    _hsv_to_rgb,
    _pattern,
    _periodic_upsample,
    _plan_object,
    _radial_function,
    _sample_periodic,
    generate_video,
    rasterise_shape,
)

__all__ = [
    "FAMILIES",
    "Family",
    "FamilyMixture",
    "generate_family_video",
    "held_out_families",
    "parse_family_weights",
    "training_families",
]

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # object-local (u, v) -> N x 3 colours


@dataclass
class _Object:
    """One object's shape, look and motion; ``labelled=False`` marks a distractor (drawn,
    occluding, never in the ground truth)."""

    shape: str
    radial: np.ndarray  # (_ANGLE_SAMPLES,) r(theta), max 1
    texture: Texture
    center: np.ndarray  # T x 2 (x, y) pixels
    scale: np.ndarray  # T, pixels per unit radius
    angle: np.ndarray  # T, radians
    labelled: bool = True
    pattern: str = ""
    colors: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    outline: float = 0.0  # outline width in pixels (0: none)
    outline_color: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class _Scene:
    """Everything a video is rendered from: a periodic background canvas translated by
    ``bg_velocity`` px/frame, objects back to front, then per-frame lighting (gain T, colour
    cast T x 3, offset T), Gaussian noise, an optional box blur and JPEG quality (0: none)."""

    background: np.ndarray  # Hc x Wc x 3 float, periodic
    bg_velocity: np.ndarray
    objects: list[_Object]
    gain: np.ndarray
    cast: np.ndarray
    offset: np.ndarray
    noise: float = 0.0
    blur: int = 0
    jpeg_quality: int = 0


Planner = Callable[[np.random.Generator, int, int, int], _Scene]


@dataclass(frozen=True)
class Family:
    """A named scene family: its default frame size and length, whether it is held out of
    training, and the planner that draws a scene from a generator."""

    name: str
    description: str
    held_out: bool
    height: int
    width: int
    num_frames: int
    plan: Planner | None = field(repr=False)  # None: sam2_core.synthetic.generate_video


# ---------------------------------------------------------------------------------------------
# Building blocks


def _random_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    return _hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))


def _two_colors(rng: np.random.Generator, sat=(0.0, 1.0), val=(0.15, 1.0)) -> np.ndarray:
    """Two colours of one object: nearby hues, any saturation and value in the ranges."""
    hue = rng.uniform()
    h = np.array([hue, hue + rng.uniform(-0.15, 0.15)])
    return _hsv_to_rgb(h, rng.uniform(*sat, size=2), rng.uniform(*val, size=2))


def _noise_field(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]):
    """Periodic smooth noise in [0, 1], H x W, from a random grid of ``cells`` cells a side."""
    grid = rng.uniform(size=(int(rng.integers(*cells)), int(rng.integers(*cells))))
    return _periodic_upsample(grid, height, width)


def _colour_noise_canvas(rng: np.random.Generator, height: int, width: int, sat, val) -> np.ndarray:
    """A smooth multi-scale texture of random colours (saturated if ``sat`` says so), H x W x 3."""
    octaves = [(2, 5), (5, 12), (12, 24)]
    canvas = np.zeros((height, width, 3))
    weight = 0.0
    for k, cells in enumerate(octaves):
        n = (int(rng.integers(*cells)), int(rng.integers(*cells)))
        colours = _hsv_to_rgb(
            rng.uniform(size=n), rng.uniform(*sat, size=n), rng.uniform(*val, size=n)
        )
        w = 0.5**k
        canvas += w * _periodic_upsample(colours, height, width)
        weight += w
    return canvas / weight


def _pattern_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A large periodic pattern (stripes, checks or rings of one period) in two colours."""
    colors = _two_colors(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    kind = rng.choice(["stripes", "checker", "plaid"])
    # periods that divide the canvas keep it tileable
    px = width / int(rng.integers(2, 10))
    py = height / int(rng.integers(2, 10))
    if kind == "stripes":
        a = 0.5 + 0.5 * np.sin(2 * math.pi * x / px)
    elif kind == "checker":
        a = ((np.floor(x / px * 2) + np.floor(y / py * 2)) % 2).astype(np.float64)
    else:
        a = 0.25 * (2 + np.sin(2 * math.pi * x / px) + np.sin(2 * math.pi * y / py))
    return colors[0] + a[..., None] * (colors[1] - colors[0])


def _random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Training backgrounds: the generator's muted texture, colourful smooth noise, flat,
    gradient or a large pattern, with lighter or darker shading."""
    kind = rng.choice(
        ["muted", "colour-noise", "flat", "gradient", "pattern"], p=[0.25, 0.3, 0.1, 0.1, 0.25]
    )
    if kind == "muted":
        canvas = _background_canvas(rng, height, width).astype(np.float64)
    elif kind == "colour-noise":
        canvas = _colour_noise_canvas(rng, height, width, (0.0, 1.0), (0.15, 1.0))
    elif kind == "flat":
        canvas = np.broadcast_to(_random_color(rng, (0, 1), (0.1, 1)), (height, width, 3)).copy()
        canvas += 10.0 * _noise_field(rng, height, width, (8, 20))[..., None]
    elif kind == "gradient":
        a = _noise_field(rng, height, width, (2, 3))[..., None]
        c = _two_colors(rng)
        canvas = c[0] + a * (c[1] - c[0])
    else:
        canvas = _pattern_canvas(rng, height, width)
    return canvas


def _sample_texture_grid(grid: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float):
    """A periodic g x g x 3 colour grid sampled at object coordinates (u, v) in [-1, 1]."""
    g = grid.shape[0]
    x, y = (u + 1.0) * (g / 2) * scale, (v + 1.0) * (g / 2) * scale
    return np.stack([_sample_periodic(grid[..., c], x, y) for c in range(3)], axis=-1)


def _random_texture(rng: np.random.Generator, plan, colors: np.ndarray) -> tuple[str, Texture]:
    """An object texture: one of the generator's two-colour patterns, colour noise, a piece of
    a colourful background-like texture (camouflage), dots or flat colour with shading;
    returns (name, texture)."""
    kind = rng.choice(
        ["pattern", "colour-noise", "camouflage", "dots", "flat"], p=[0.35, 0.2, 0.2, 0.1, 0.15]
    )
    if kind == "camouflage":
        grid = _colour_noise_canvas(rng, 24, 24, (0.0, 1.0), (0.15, 1.0))
        scale = rng.uniform(0.15, 0.5)
        return "camouflage", lambda u, v: _sample_texture_grid(grid, u, v, scale)
    if kind == "pattern":

        def texture(u, v):
            alpha = _pattern(plan, u, v)
            return colors[0] + alpha[:, None] * (colors[1] - colors[0])

        return plan.pattern, texture
    if kind == "colour-noise":
        g = 6
        h = rng.uniform() + rng.uniform(-0.2, 0.2, size=(g, g))
        grid = _hsv_to_rgb(
            h, rng.uniform(0.2, 1.0, size=(g, g)), rng.uniform(0.2, 1.0, size=(g, g))
        )
        scale = rng.uniform(0.5, 1.5)
        return "colour-noise", lambda u, v: _sample_texture_grid(grid, u, v, scale)
    if kind == "dots":
        f = rng.uniform(2.0, 5.0)
        r = rng.uniform(0.2, 0.4)

        def texture(u, v):
            du = (u * f) % 1.0 - 0.5
            dv = (v * f) % 1.0 - 0.5
            alpha = (du * du + dv * dv < r * r).astype(np.float64)
            return colors[0] + alpha[:, None] * (colors[1] - colors[0])

        return "dots", texture
    shade = rng.uniform(0.0, 0.3)
    d = rng.uniform(0, 2 * math.pi)

    def flat(u, v):
        alpha = 1.0 - shade * 0.5 * (1 + u * math.cos(d) + v * math.sin(d))
        return colors[0][None] * alpha[:, None]

    return "flat", flat


def _lighting(rng: np.random.Generator, T: int, gain_range, flicker: float, cast: float):
    """Per-frame gain (a drift plus a slow wave plus frame-to-frame flicker), colour cast and
    offset."""
    t = np.arange(T)
    start, end = rng.uniform(*gain_range, size=2)
    gain = start + (end - start) * t / max(T - 1, 1)
    gain = gain * (
        1 + 0.1 * rng.uniform() * np.sin(rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3))
    )
    gain = gain * (1 + flicker * rng.uniform(-1, 1, size=T))
    c0, c1 = 1 + cast * rng.uniform(-1, 1, size=(2, 3))
    colour = c0 + (c1 - c0) * (t / max(T - 1, 1))[:, None]
    offset = np.zeros(T)
    return gain, colour, offset


def _motion_config(rng: np.random.Generator, height: int, width: int, T: int) -> SyntheticConfig:
    """The generator's motion and size settings, drawn from wider ranges."""
    lo = rng.uniform(0.04, 0.12)
    return SyntheticConfig(
        height=height,
        width=width,
        num_frames=T,
        min_radius=lo,
        max_radius=lo + rng.uniform(0.05, 0.25),
        max_speed=rng.uniform(0.0, 0.05),
        max_rotation=rng.uniform(0.0, 0.1),
        max_scale_change=rng.uniform(0.0, 1.0),
        late_entries=0.2,
    )


def _planned_object(rng: np.random.Generator, config: SyntheticConfig, colors, labelled=True):
    """An object with the generator's shapes and motion and a randomised texture."""
    plan = _plan_object(rng, config, late=bool(rng.random() < config.late_entries))
    if rng.random() < 0.2:  # triangles and stars beside the generator's shapes
        shape = str(rng.choice(["triangle", "star"]))
        radial = _extra_radial(rng, shape)
    else:
        shape, radial = plan.shape, plan.radial
    name, texture = _random_texture(rng, plan, colors)
    return _Object(
        shape, radial, texture, plan.center, plan.scale, plan.angle, labelled, name, colors
    )


def _extra_radial(rng: np.random.Generator, shape: str) -> np.ndarray:
    """r(theta) of a triangle or a star (max 1)."""
    theta = np.linspace(-math.pi, math.pi, _ANGLE_SAMPLES, endpoint=False)
    if shape == "triangle":
        return _polygon_radial(theta, rng.uniform(0, 2 * math.pi), 3, rng.uniform(-0.3, 0.3, 3))
    points = int(rng.integers(4, 7))
    depth = rng.uniform(0.35, 0.7)
    r = 1 - depth * 0.5 * (1 + np.cos(points * theta + rng.uniform(0, 2 * math.pi)))
    return r / r.max()


def _polygon_radial(theta: np.ndarray, rotation: float, n: int, jitter: np.ndarray) -> np.ndarray:
    """r(theta) of a convex polygon with ``n`` vertices on the unit circle (angles jittered)."""
    vertex = np.sort((np.arange(n) + jitter) * (2 * math.pi / n) + rotation) % (2 * math.pi)
    vertex = np.sort((vertex + math.pi) % (2 * math.pi) - math.pi)
    pts = np.stack([np.cos(vertex), np.sin(vertex)], axis=1)
    k = np.searchsorted(vertex, theta) % n
    p0, p1 = pts[k - 1], pts[k]
    edge = p1 - p0
    num = p0[:, 0] * edge[:, 1] - p0[:, 1] * edge[:, 0]
    den = np.cos(theta) * edge[:, 1] - np.sin(theta) * edge[:, 0]
    r = num / den
    return r / r.max()


# ---------------------------------------------------------------------------------------------
# Training families


def _plan_randomised(rng: np.random.Generator, H: int, W: int, T: int, crowded: bool = False):
    config = _motion_config(rng, H, W, T)
    background = _random_background(rng, H, W)
    num = int(rng.integers(2, 6) if crowded else rng.integers(1, 4))
    distractors = int(rng.integers(2, 6) if crowded else rng.integers(0, 3))
    if crowded:
        config = replace(config, max_radius=min(config.max_radius, 0.16))
    sat, val = ((0.0, 1.0), (0.15, 1.0)) if rng.random() < 0.6 else ((0.5, 1.0), (0.4, 1.0))
    objects = [
        _planned_object(rng, config, _two_colors(rng, sat, val), labelled=k < num)
        for k in range(num + distractors)
    ]
    order = rng.permutation(len(objects))  # distractors at any depth
    objects = [objects[i] for i in order]
    gain, cast, offset = _lighting(rng, T, (0.6, 1.4), rng.choice([0.0, 0.05]), 0.15)
    return _Scene(
        background=background,
        bg_velocity=rng.uniform(-1, 1, size=2) * rng.choice([0.0, 1.0, 3.0]),
        objects=objects,
        gain=gain,
        cast=cast,
        offset=offset,
        noise=float(rng.choice([0.0, rng.uniform(1, 6)])),
        blur=int(rng.random() < 0.2),
        jpeg_quality=int(rng.integers(40, 95)) if rng.random() < 0.3 else 0,
    )


def _plan_crowded(rng: np.random.Generator, H: int, W: int, T: int) -> _Scene:
    return _plan_randomised(rng, H, W, T, crowded=True)


# ---------------------------------------------------------------------------------------------
# Held-out families: their own rules, outside the training ranges


def _bounce(rng: np.random.Generator, H: int, W: int, T: int, radius: float) -> np.ndarray:
    """T x 2 centres of constant velocity, reflected off the frame's edges."""
    pos = np.array([rng.uniform(radius, W - radius), rng.uniform(radius, H - radius)])
    speed = rng.uniform(0.005, 0.025) * min(H, W)
    heading = rng.uniform(0, 2 * math.pi)
    raw = pos + np.outer(np.arange(T), speed * np.array([math.cos(heading), math.sin(heading)]))
    out = np.empty_like(raw)
    for axis, size in ((0, W), (1, H)):
        span = max(size - 2 * radius, 1.0)
        x = np.mod(raw[:, axis] - radius, 2 * span)
        out[:, axis] = radius + np.where(x > span, 2 * span - x, x)
    return out


def _plan_shapes_on_texture(rng: np.random.Generator, H: int, W: int, T: int) -> _Scene:
    """Ellipses, rectangles and triangles textured with three-colour noise, bouncing over a
    static smooth texture of the same colourfulness (so colour alone does not find them)."""
    side = min(H, W)
    background = _colour_noise_canvas(rng, H, W, (0.3, 1.0), (0.2, 1.0))
    objects = []
    t = np.arange(T)
    theta = np.linspace(-math.pi, math.pi, _ANGLE_SAMPLES, endpoint=False)
    for _ in range(int(rng.integers(2, 5))):
        shape = str(rng.choice(["ellipse", "rectangle", "triangle"]))
        if shape == "triangle":
            radial = _polygon_radial(theta, rng.uniform(0, 2 * math.pi), 3, np.zeros(3))
        else:
            radial = _radial_function(rng, shape)
        size = rng.uniform(0.1, 0.2) * side
        colors = _two_colors(rng, (0.3, 1.0), (0.2, 1.0))
        third = _random_color(rng, (0.3, 1.0), (0.2, 1.0))
        g = 8
        a, b = rng.uniform(size=(2, g, g, 1))
        grid = colors[0] * (1 - a) * (1 - b) + colors[1] * a * (1 - b) + third * b
        texture = lambda u, v, grid=grid: _sample_texture_grid(grid, u, v, 1.0)  # noqa: E731
        objects.append(
            _Object(
                shape,
                radial,
                texture,
                center=_bounce(rng, H, W, T, size),
                scale=np.full(T, size),
                angle=rng.uniform(0, 2 * math.pi) + rng.uniform(-0.04, 0.04) * t,
                pattern="three-colour-noise",
                colors=colors,
            )
        )
    return _Scene(background, np.zeros(2), objects, np.ones(T), np.ones((T, 3)), np.zeros(T))


def _plan_night(rng: np.random.Generator, H: int, W: int, T: int) -> _Scene:
    """A dark, low-contrast, noisy, flickering and JPEG-compressed scene."""
    config = replace(_motion_config(rng, H, W, T), late_entries=0.0)
    background = _background_canvas(rng, H, W).astype(np.float64)
    num = int(rng.integers(1, 4))
    objects = [
        _planned_object(rng, config, _two_colors(rng, (0.1, 0.6), (0.4, 1.0))) for _ in range(num)
    ]
    gain, cast, offset = _lighting(rng, T, (0.3, 0.5), 0.12, 0.05)
    return _Scene(
        background=background,
        bg_velocity=rng.uniform(-1, 1, size=2),
        objects=objects,
        gain=gain,
        cast=cast,
        offset=offset + rng.uniform(5, 15),
        noise=float(rng.uniform(6, 10)),
        jpeg_quality=int(rng.integers(20, 35)),
    )


def _plan_cartoon(rng: np.random.Generator, H: int, W: int, T: int) -> _Scene:
    """Flat-coloured shapes with dark outlines over flat pastel scenery (unlabelled shapes)."""
    side = min(H, W)
    canvas = np.broadcast_to(_random_color(rng, (0.1, 0.35), (0.8, 1.0)), (H, W, 3)).copy()
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(int(rng.integers(2, 6))):  # static scenery painted into the background
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.15, 0.4) * side
        inside = (xx - cx) ** 2 / (r * rng.uniform(0.5, 2)) ** 2 + (yy - cy) ** 2 / r**2 < 1
        canvas[inside] = _random_color(rng, (0.1, 0.4), (0.6, 0.95))
    config = replace(
        _motion_config(rng, H, W, T), late_entries=0.0, min_radius=0.1, max_radius=0.22
    )
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        plan = _plan_object(rng, config)
        color = _random_color(rng, (0.6, 1.0), (0.6, 1.0))
        objects.append(
            _Object(
                plan.shape,
                plan.radial,
                lambda u, v, c=color: np.broadcast_to(c, (len(u), 3)),
                plan.center,
                plan.scale,
                plan.angle,
                pattern="flat-outlined",
                colors=np.stack([color, color]),
                outline=float(rng.uniform(1.5, 3.0)),
                outline_color=np.full(3, rng.uniform(0, 40)),
            )
        )
    return _Scene(canvas, np.zeros(2), objects, np.ones(T), np.ones((T, 3)), np.zeros(T))


def _blobs(seed: int, height: int, width: int, num_frames: int) -> SyntheticVideo:
    return generate_video(
        seed, SyntheticConfig(height=height, width=width, num_frames=num_frames, max_objects=3)
    )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "blobs",
            "sam2_core.synthetic's generator (the demo model's training data)",
            False,
            128,
            128,
            48,
            None,
        ),
        Family(
            "randomised",
            "domain randomisation: textures (camouflage included), colours, backgrounds, sizes, motion, distractors, "
            "lighting, noise, blur, JPEG",
            False,
            128,
            128,
            32,
            _plan_randomised,
        ),
        Family(
            "randomised-4x3",
            "randomised at 96 x 128 (the model's square input stretches it, as it does 240 x 320)",
            False,
            96,
            128,
            32,
            _plan_randomised,
        ),
        Family(
            "crowded",
            "randomised, with 2-5 smaller objects and 2-5 unlabelled distractors (occlusion)",
            False,
            128,
            128,
            32,
            _plan_crowded,
        ),
        Family(
            "shapes-on-texture",
            "ellipses, rectangles and triangles textured with three-colour noise, bouncing over a "
            "static smooth colourful texture (the issue's failing case)",
            True,
            240,
            320,
            48,
            _plan_shapes_on_texture,
        ),
        Family(
            "night",
            "dark (gain 0.3-0.5), low-contrast, flickering, noisy (std 6-10) and JPEG-compressed (quality 20-35)",
            True,
            192,
            256,
            48,
            _plan_night,
        ),
        Family(
            "cartoon",
            "flat-coloured outlined shapes over flat pastel scenery, 16:9",
            True,
            180,
            320,
            48,
            _plan_cartoon,
        ),
    )
}


def training_families() -> list[str]:
    return [name for name, f in FAMILIES.items() if not f.held_out]


def held_out_families() -> list[str]:
    return [name for name, f in FAMILIES.items() if f.held_out]


# ---------------------------------------------------------------------------------------------
# Rendering


def generate_family_video(
    family: str,
    seed: int,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    min_visible_pixels: int = 16,
) -> SyntheticVideo:
    """One video of ``family``; the same family, seed and size give the same video. Sizes
    default to the family's."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    fam = FAMILIES[family]
    H, W, T = height or fam.height, width or fam.width, num_frames or fam.num_frames
    if H < 16 or W < 16 or T < 1:
        raise ValueError(f"family {family!r}: frames must be at least 16 x 16, got {H} x {W} x {T}")
    if fam.plan is None:
        return _blobs(int(seed), H, W, T)
    rng = np.random.default_rng([zlib.crc32(family.encode()), int(seed)])
    for _attempt in range(10):
        scene = fam.plan(rng, H, W, T)
        frames, labels, amodal, labelled = _render(scene, H, W, T)
        areas = (
            np.stack([(labels == k + 1).sum(axis=(1, 2)) for k in labelled]) if labelled else None
        )
        keep = [i for i, k in enumerate(labelled) if areas[i].max() >= min_visible_pixels]
        if keep:
            break
    else:
        raise ValueError(f"family {family!r} seed {seed}: no object could be made visible")
    frames = _photometric(rng, frames, scene)
    ids = [labelled[i] + 1 for i in keep]
    masks = labels[None] == np.array(ids, dtype=np.uint8)[:, None, None, None]
    objects = tuple(
        SyntheticObject(
            object_id=n + 1,
            shape=scene.objects[ids[n] - 1].shape,
            pattern=scene.objects[ids[n] - 1].pattern,
            colors=np.clip(np.rint(scene.objects[ids[n] - 1].colors), 0, 255).astype(np.uint8),
            depth=ids[n] - 1,
        )
        for n in range(len(ids))
    )
    return SyntheticVideo(
        frames=frames,
        masks=masks,
        object_ids=list(range(1, len(ids) + 1)),
        amodal_masks=amodal[keep],
        objects=objects,
        seed=int(seed),
    )


def _render(scene: _Scene, H: int, W: int, T: int):
    """Paint objects back to front over the translating background. Returns float frames
    (T x H x W x 3), labels (T x H x W uint8: k + 1 = scene.objects[k], 0 = background or a
    distractor), amodal masks of the labelled objects and their indices in scene.objects."""
    frames = np.empty((T, H, W, 3), dtype=np.float32)
    labels = np.zeros((T, H, W), dtype=np.uint8)
    labelled = [k for k, o in enumerate(scene.objects) if o.labelled]
    amodal = np.zeros((len(labelled), T, H, W), dtype=bool)
    row = {k: i for i, k in enumerate(labelled)}
    closed = [np.append(o.radial, o.radial[0]) for o in scene.objects]
    bh, bw = scene.background.shape[:2]
    for t in range(T):
        dy, dx = np.rint(scene.bg_velocity[::-1] * t).astype(np.int64)
        rows = (np.arange(H) - dy) % bh
        cols = (np.arange(W) - dx) % bw
        frames[t] = scene.background[rows[:, None], cols[None, :]]
        for k, obj in enumerate(scene.objects):
            shape = rasterise_shape(obj.center[t], obj.scale[t], obj.angle[t], closed[k], H, W)
            if shape is None:
                continue
            (y0, y1, x0, x1), inside, s = shape.window, shape.inside, obj.scale[t]
            color = obj.texture(shape.u, shape.v)
            if obj.outline > 0:
                edge = shape.rho > shape.radius - obj.outline / s
                color = np.where(edge[:, None], obj.outline_color[None], color)
            frames[t, y0:y1, x0:x1][inside] = color
            labels[t, y0:y1, x0:x1][inside] = k + 1 if obj.labelled else 0
            if obj.labelled:
                amodal[row[k], t, y0:y1, x0:x1] = inside
    return frames, labels, amodal, labelled


def _photometric(rng: np.random.Generator, frames: np.ndarray, scene: _Scene) -> np.ndarray:
    """Lighting, blur, noise and JPEG on float frames; returns uint8."""
    out = frames * (scene.gain[:, None, None, None] * scene.cast[:, None, None, :]).astype(
        np.float32
    ) + scene.offset[:, None, None, None].astype(np.float32)
    if scene.blur:
        out = (out + np.roll(out, 1, axis=1) + np.roll(out, -1, axis=1)) / 3
        out = (out + np.roll(out, 1, axis=2) + np.roll(out, -1, axis=2)) / 3
    if scene.noise > 0:
        out = out + rng.normal(0.0, scene.noise, size=out.shape).astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if scene.jpeg_quality:
        from PIL import Image

        for t in range(len(out)):
            buffer = io.BytesIO()
            Image.fromarray(out[t]).save(buffer, format="JPEG", quality=scene.jpeg_quality)
            out[t] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


# ---------------------------------------------------------------------------------------------
# Training mixtures


def parse_family_weights(text: str) -> tuple[tuple[str, float], ...]:
    """'blobs=2,randomised,crowded' -> (('blobs', 2.0), ('randomised', 1.0), ('crowded', 1.0));
    ValueError naming a bad entry."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in FAMILIES:
            raise ValueError(
                f"unknown scene family {name!r} in {text!r}; known: {', '.join(FAMILIES)}"
            )
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad weight in {part!r} (NAME=WEIGHT)") from None
        if not w > 0:
            raise ValueError(f"weight of {name!r} must be > 0, got {weight}")
        out.append((name, w))
    if not out:
        raise ValueError(f"no scene family in {text!r}; known: {', '.join(FAMILIES)}")
    return tuple(out)


@dataclass(frozen=True)
class FamilyMixture:
    """A seed -> video function over several families: the seed picks the family (by weight)
    and then the video, so a list of seeds still names a dataset. ``blobs`` videos use
    ``blobs_config`` (the demo model's generator settings)."""

    families: tuple[tuple[str, float], ...]
    blobs_config: SyntheticConfig = field(default_factory=SyntheticConfig)

    def family_of(self, seed: int) -> str:
        weights = np.array([w for _, w in self.families])
        pick = np.random.default_rng([int(seed), 0xFA]).choice(
            len(weights), p=weights / weights.sum()
        )
        return self.families[int(pick)][0]

    def __call__(self, seed: int) -> SyntheticVideo:
        family = self.family_of(seed)
        if family == "blobs":
            return generate_video(seed, self.blobs_config)
        return generate_family_video(family, seed)
