"""One object's prompts in a manifest: checked from the JSON values, and later against the video.

:func:`validate_object` and :func:`validate_prompt` turn a manifest entry's object and its
prompts into :class:`ObjectSpec` / :class:`Prompt` records (for :mod:`pipeline.manifest`);
:func:`fit_prompt_to_frame` checks a prompt against the decoded frame's size (for the worker).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.manifest_fields import (
    apply_rule,
    check_box,
    check_category,
    check_labels,
    check_mask,
    check_points,
    is_int,
    short,
)
from pipeline.manifest_parse import Entry
from pipeline.manifest_parse import Invalid as _Invalid
from sam2_core.prompts import check_combination, check_pairing

OBJECT_FIELDS = ("object_id", "prompts", "category")
PROMPT_FIELDS = ("frame", "points", "labels", "box", "mask")
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Prompt:
    """Prompts for one object on one frame; coordinates in original-video pixels.

    points: N x (x, y) with labels N x {0: background, 1: foreground};
    box: (x1, y1, x2, y2); mask_rle: {"size": [h, w], "counts": str} (COCO compressed RLE).
    """

    frame: int
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None
    mask_rle: dict | None = None


@dataclass(frozen=True)
class ObjectSpec:
    """One object to track, its prompts (on one or more frames) and its class name (None when
    the manifest gives none; written on its rows as ``category``)."""

    object_id: int
    prompts: tuple[Prompt, ...]
    category: str | None = None


def validate_object(
    obj: Any, where: str, object_index: int, entry: Entry, image: bool = False
) -> tuple[ObjectSpec | None, list[_Invalid]]:
    """One entry of ``objects`` (at ``where``) as an ObjectSpec, or None and its problems."""
    if not isinstance(obj, dict):
        return None, [_Invalid(where, f"must be an object, got {short(obj)}")]
    problems: list[_Invalid] = []
    for key in obj:
        if key not in OBJECT_FIELDS:
            problems.append(
                _Invalid(f"{where}.{key}", f"unknown field (allowed: {', '.join(OBJECT_FIELDS)})")
            )
    object_id = obj.get("object_id")
    if not is_int(object_id) or not 0 <= object_id <= MAX_ID:
        problems.append(
            _Invalid(
                f"{where}.object_id",
                f"must be a non-negative integer, got {short(object_id)}",
                location=(entry.locations or {}).get((object_index, 0)),
            )
        )
        object_id = None
    category = obj.get("category")
    if category is not None:
        try:
            category = check_category(category, f"{where}.category")
        except _Invalid as problem:
            problem.location = (entry.locations or {}).get((object_index, "category"))
            problems.append(problem)
    prompts = obj.get("prompts")
    parsed: list[Prompt] = []
    if not isinstance(prompts, list) or not prompts:
        problems.append(
            _Invalid(f"{where}.prompts", f"must be a non-empty list, got {short(prompts)}")
        )
    else:
        frames: dict[int, int] = {}
        for index, raw_prompt in enumerate(prompts):
            prompt_where = f"{where}.prompts[{index}]"
            row_location = (entry.locations or {}).get((object_index, index))
            try:
                prompt = validate_prompt(raw_prompt, prompt_where, image)
            except _Invalid as problem:
                problem.location = problem.location or row_location
                problems.append(problem)
                continue
            if prompt.frame in frames:
                problem = _Invalid(
                    f"{prompt_where}.frame",
                    f"second prompt on frame {prompt.frame} for this object (first is prompts[{frames[prompt.frame]}]); "
                    "put all clicks of one frame in one prompt",
                )
                problem.location = problem.location or row_location
                problems.append(problem)
                continue
            frames[prompt.frame] = index
            parsed.append(prompt)
    if problems or object_id is None:
        return None, problems
    return ObjectSpec(object_id=object_id, prompts=tuple(parsed), category=category), []


def validate_objects(
    objects: list, entry: Entry, image: bool = False
) -> tuple[list[ObjectSpec], list[_Invalid]]:
    """A line's ``objects`` list: each entry's ObjectSpec (:func:`validate_object`), and the
    problems found, a repeated object id among them."""
    specs: list[ObjectSpec] = []
    problems: list[_Invalid] = []
    seen: set[int] = set()
    for index, obj in enumerate(objects):
        spec, found = validate_object(obj, f"objects[{index}]", index, entry, image)
        problems.extend(found)
        if spec is None:
            continue
        if spec.object_id in seen:
            problems.append(
                _Invalid(
                    f"objects[{index}].object_id",
                    f"duplicate object id {spec.object_id} in this {'image' if image else 'video'}",
                )
            )
            continue
        seen.add(spec.object_id)
        specs.append(spec)
    return specs, problems


def validate_prompt(raw: Any, where: str, image: bool = False) -> Prompt:
    """One prompt; on an image (``image``) the frame may be left out and must be 0."""
    if not isinstance(raw, dict):
        raise _Invalid(where, f"must be an object, got {short(raw)}")
    for key in raw:
        if key not in PROMPT_FIELDS:
            raise _Invalid(f"{where}.{key}", f"unknown field (allowed: {', '.join(PROMPT_FIELDS)})")
    frame = raw.get("frame", 0 if image else None)
    if frame is None:
        raise _Invalid(f"{where}.frame", "missing")
    if not is_int(frame) or not 0 <= frame <= MAX_ID:
        raise _Invalid(f"{where}.frame", f"must be a non-negative integer, got {short(frame)}")
    if image and frame != 0:
        raise _Invalid(f"{where}.frame", f"an image has frame 0 only, got {frame}")

    points = labels = box = mask = None
    has_points = raw.get("points") is not None
    apply_rule(where, check_pairing, has_points, raw.get("labels") is not None)
    if has_points:
        points = check_points(raw["points"], f"{where}.points")
        labels = check_labels(raw["labels"], where, len(points))
    if raw.get("box") is not None:
        box = check_box(raw["box"], f"{where}.box")
    has_mask = raw.get("mask") is not None
    apply_rule(where, check_combination, points is not None, box is not None, has_mask)
    if has_mask:
        mask = check_mask(raw["mask"], f"{where}.mask")
    return Prompt(frame=frame, points=points, labels=labels, box=box, mask_rle=mask)


# ---------------------------------------------------------------- against the video


def fit_prompt_to_frame(prompt: Prompt, height: int, width: int) -> Prompt:
    """``prompt`` checked against a height x width frame, a partly-outside box clipped to it.

    A point must lie in [0, width] x [0, height]; a box must overlap the frame.
    Otherwise the prompt points at nothing in the video, yet the model would still
    return a mask for it, so this raises ValueError naming the field and value
    ("points[1] (5000, -300) is outside ..."). Callers (the worker, once the video is
    open) add the manifest location, object and prompt. Mask prompts pass unchanged.
    """
    for index, (x, y) in enumerate(prompt.points or ()):
        if not (0 <= x <= width and 0 <= y <= height):
            raise ValueError(
                f"points[{index}] ({x:g}, {y:g}) is outside the {width} x {height} frame "
                f"(x must be in 0..{width}, y in 0..{height})"
            )
    if prompt.box is None:
        return prompt
    x1, y1, x2, y2 = prompt.box
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies wholly outside the {width} x {height} frame"
        )
    return prompt if clipped == prompt.box else dataclasses.replace(prompt, box=clipped)
