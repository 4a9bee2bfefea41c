"""J&F of a model on synthetic videos, tracked in process from the clicks a manifest would hold.

Training scores its checkpoints with this (``python -m jobs train --eval-videos``), and the
demo model's test pins its score: each video is generated from its seed, prompted with one
click per object exactly as :func:`pipeline.synthetic_io.manifest_entry` writes it and as a
label run converts it, tracked, and compared with the generator's masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa

from pipeline.evaluate import EvalReport, evaluate_tables
from pipeline.masks import mask_row, mask_table
from pipeline.synthetic_io import (
    entry_prompts,
    ground_truth_table,
    manifest_entry,
    video_id_for_seed,
)
from sam2_core.frames import ArrayFrames, FrameSource
from sam2_core.modeling.sam2 import SAM2Model
from sam2_core.prompts import ObjectPrompt
from sam2_core.synthetic import SyntheticConfig, SyntheticVideo, generate_video
from sam2_core.tracker import track_video

EVAL_RUN_ID = "train-eval"
EVAL_MODEL = "training"


def track_generated(
    model: SAM2Model, video: SyntheticVideo, id_prefix: str = "synthetic"
) -> tuple[pa.Table, pa.Table]:
    """Track one synthetic video (of any generator) from the manifest's clicks; (prediction
    table, ground-truth table). A predicted mask counts only where the object is judged present."""
    video_id = video_id_for_seed(video.seed, id_prefix)
    entry = manifest_entry(f"{video_id}.mp4", video_id, video)
    frames = ArrayFrames(video.frames)
    prompts = entry_prompts(entry, frames)
    return tracked_table(model, video_id, frames, prompts), ground_truth_table(video_id, video)


def tracked_table(
    model: SAM2Model, video_id: str, frames: FrameSource, prompts: Sequence[ObjectPrompt]
) -> pa.Table:
    """Mask rows of ``prompts`` tracked through ``frames`` (for evaluation: synthetic videos,
    held-out training videos); a mask counts only where the object is judged present."""
    rows = []
    for result in track_video(model, frames, prompts):
        for i, oid in enumerate(result.object_ids):
            present = bool(result.object_score_logits[i] > 0)
            rows.append(
                mask_row(
                    video_id,
                    oid,
                    result.frame_index,
                    (result.mask_logits[i] > 0).numpy() & present,
                    score=float(result.ious[i]),
                    present=present,
                    prompted=result.prompted[i],
                    run_id=EVAL_RUN_ID,
                    model=EVAL_MODEL,
                    object_score_logit=float(result.object_score_logits[i]),
                )
            )
    return mask_table(rows)


def synthetic_jf(model: SAM2Model, seeds: Iterable[int], config: SyntheticConfig) -> EvalReport:
    """J&F of ``model`` on synthetic videos of ``seeds`` (one click per object, as the manifest),
    run in eval mode; the model's training mode is restored afterwards."""
    return _videos_jf(model, (generate_video(int(s), config) for s in seeds), "synthetic")


def family_jf(
    model: SAM2Model,
    family: str,
    seeds: Iterable[int],
    height: int | None = None,
    width: int | None = None,
) -> EvalReport:
    """J&F of ``model`` on videos of a scene family (:mod:`sam2_core.synthetic_families`; sizes
    default to the family's), prompted and tracked as :func:`synthetic_jf`."""
    from sam2_core.synthetic_families import generate_family_video

    videos = (generate_family_video(family, int(s), height, width) for s in seeds)
    return _videos_jf(model, videos, family)


def _videos_jf(model: SAM2Model, videos: Iterable[SyntheticVideo], id_prefix: str) -> EvalReport:
    """J&F of ``model`` in eval mode over ``videos`` (generated as they are tracked); the
    model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        preds, gts = zip(*(track_generated(model, video, id_prefix) for video in videos))
    finally:
        model.train(was_training)
    return evaluate_tables(pa.concat_tables(preds), pa.concat_tables(gts))
