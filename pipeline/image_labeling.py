"""Label a batch of still images in one process: images in, mask table out (frame 0 rows).

The image counterpart of :mod:`pipeline.labeling` and, like it, free of Ray: workers call
:func:`label_images` for an image unit, tests call it for the single-process reference.

- Prompted objects go through :class:`sam2_core.predictor.ImagePredictor` (SAM 2 or SAM 1):
  prompts are checked against the image as a video's are against its frames
  (:func:`pipeline.labeling.to_object_prompts`); a single click asks for three masks and keeps
  the one with the highest predicted IoU, other point/box prompts for one mask (the tracker's
  rule on a conditioning frame); a mask prompt is its own result, as on a video's mask-prompted
  frame (score 1, object-score logit +10 or -10 for an empty mask: SAM 2's rule for mask
  inputs). Rows carry the object's manifest category; source "prompt".
- An image without objects gets automatic masks (:class:`sam2_core.mask_generator.MaskGenerator`
  with its manifest ``auto`` settings); object ids 1..K follow (area descending, bbox, mask
  bits), so
  the same image and settings always give the same ids. ``prompted`` is false on these rows,
  ``source`` is "auto" and ``object_score_logit`` null (the generator keeps no object score).

Every image of the batch is read and every prompt checked before the model runs, so bad input
fails the unit fast with an :class:`~pipeline.errors.InputError` naming the file or line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from pipeline.images import read_image
from pipeline.labeling import LabelStats, to_object_prompts
from pipeline.manifest import VideoJob
from pipeline.masks import MASK_SCHEMA, MaskRow, ObjectOrigin, mask_row, mask_table
from pipeline.plan import ImageBatch
from pipeline.storage import safe_uri
from sam2_core.frames import ArrayFrames
from sam2_core.prompts import ObjectPrompt

SORT_KEYS = [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
ENCODE_BATCH = 4  # prompted images encoded per image-encoder call
MASK_PROMPT_LOGIT = 10.0  # a mask prompt's object score: SAM 2's mask_as_output gives +-10
_AUTOMATIC = ObjectOrigin(source="auto")


def label_images(
    model,
    batch: ImageBatch,
    *,
    run_id: str,
    model_name: str,
    object_ids: Sequence[int] | None = None,
    storage_options: dict | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    encoder=None,
    tracker_options=None,
) -> tuple[pa.Table, LabelStats]:
    """Every image of ``batch`` labeled: one MASK_SCHEMA row per (image, object), frame 0.

    Called like :func:`pipeline.labeling.label_video` (the worker picks one by the unit):
    ``object_ids``, ``encoder`` and ``tracker_options`` are accepted for that and unused (an
    image is labeled whole; a unit's images share encoder batches of their own).
    ``on_frame(done, total)`` is called after each image. Rows come sorted by (video_id,
    object_id).
    """
    import torch

    started = time.perf_counter()
    images = batch.images
    arrays = [read_image(image.video, storage_options) for image in images]
    decode_s = time.perf_counter() - started
    prompts = [
        to_object_prompts(
            image.objects, ArrayFrames([array]), f"{image.location} ({safe_uri(image.video)})"
        )
        for image, array in zip(images, arrays)
    ]
    rows: list[MaskRow] = []
    encode_s = 0.0
    done = 0
    with torch.inference_mode():
        prompted = [i for i, image in enumerate(images) if image.objects]
        automatic = [i for i, image in enumerate(images) if not image.objects]
        results: list[tuple[int, list]] = []
        for start in range(0, len(prompted), ENCODE_BATCH):
            chunk = prompted[start : start + ENCODE_BATCH]
            results.extend(
                zip(
                    chunk,
                    _predict_objects(
                        model, [arrays[i] for i in chunk], [prompts[i] for i in chunk]
                    ),
                )
            )
        generators: dict = {}
        for i in automatic:
            results.append((i, _automatic_masks(model, arrays[i], images[i], generators)))
        for i, found in sorted(results, key=lambda item: item[0]):
            encode_started = time.perf_counter()
            origins = {o.object_id: ObjectOrigin(category=o.category) for o in images[i].objects}
            rows.extend(
                mask_row(
                    images[i].video_id,
                    object_id,
                    0,
                    mask,
                    score=score,
                    present=present,
                    prompted=bool(images[i].objects),
                    run_id=run_id,
                    model=model_name,
                    object_score_logit=logit,
                    origin=origins.get(object_id, _AUTOMATIC),
                )
                for object_id, mask, score, present, logit in found
            )
            encode_s += time.perf_counter() - encode_started
            done += 1
            if on_frame is not None:
                on_frame(done, len(images))
    table = mask_table(rows).sort_by(SORT_KEYS) if rows else MASK_SCHEMA.empty_table()
    wall = time.perf_counter() - started
    stats = LabelStats(
        frames=len(images),
        rows=table.num_rows,
        objects=len(rows),
        height=int(arrays[0].shape[0]),
        width=int(arrays[0].shape[1]),
        wall_s=wall,
        decode_s=decode_s,
        track_s=max(0.0, wall - decode_s - encode_s),  # the model's share, encoding aside
        encode_s=encode_s,
    )
    return table, stats


def _predict_objects(
    model, arrays: list[np.ndarray], prompts: list[list[ObjectPrompt]]
) -> list[list[tuple[int, np.ndarray, float, bool, float]]]:
    """(object_id, mask, score, present, object-score logit) per prompted object of each image,
    the images encoded in one batch."""
    from sam2_core.predictor import ImagePredictor

    predictor = ImagePredictor(model)
    predictor.set_images(arrays)
    out = []
    for index, objects in enumerate(prompts):
        found = []
        for p in objects:
            if p.mask is not None:
                drawn = bool(p.mask.any())
                logit = MASK_PROMPT_LOGIT if drawn else -MASK_PROMPT_LOGIT
                found.append((p.object_id, np.asarray(p.mask, dtype=bool), 1.0, drawn, logit))
                continue
            single_click = p.points is not None and len(p.points) == 1 and p.box is None
            pred = predictor.predict(
                point_coords=None if p.points is None else np.array(p.points, dtype=np.float32),
                point_labels=None if p.labels is None else np.array(p.labels, dtype=np.int32),
                box=None if p.box is None else np.array(p.box, dtype=np.float32),
                multimask_output=single_click,
                image_index=index,
            )
            best = int(pred.ious.argmax())
            logit = float(pred.object_score_logits.reshape(-1)[0])
            found.append(
                (
                    p.object_id,
                    pred.masks[best].cpu().numpy(),
                    float(pred.ious[best]),
                    logit > 0,
                    logit,
                )
            )
        out.append(found)
    return out


def _automatic_masks(
    model, array: np.ndarray, image: VideoJob, generators: dict
) -> list[tuple[int, np.ndarray, float, bool, None]]:
    """(object_id, mask, predicted IoU, True, None: no object score) per automatic mask, ids
    1..K by (area descending, bbox, mask bits); one generator per distinct settings in
    ``generators``."""
    from sam2_core.mask_generator import MaskGenerator

    generator = generators.get(image.auto)
    if generator is None:
        generator = generators[image.auto] = MaskGenerator(model, **dict(image.auto))
    records = generator.generate(array)
    masks = [np.asarray(r.segmentation, dtype=bool) for r in records]
    keys = [
        (-int(m.sum()), tuple(r.bbox), np.packbits(m).tobytes()) for r, m in zip(records, masks)
    ]
    order = sorted(range(len(records)), key=lambda k: keys[k])
    return [
        (object_id, masks[k], float(records[k].predicted_iou), True, None)
        for object_id, k in enumerate(order, start=1)
    ]
