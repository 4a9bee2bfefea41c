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
from sam2_core.synthetic import SyntheticConfig, generate_video
from sam2_core.tracker import track_video

EVAL_RUN_ID = "train-eval"
EVAL_MODEL = "training"


def track_synthetic(
    model: SAM2Model, seed: int, config: SyntheticConfig, id_prefix: str = "synthetic"
) -> tuple[pa.Table, pa.Table]:
    """Track one synthetic video from the manifest's clicks; (prediction table, ground-truth
    table). A predicted mask counts only where the object is judged present."""
    video = generate_video(seed, config)
    video_id = video_id_for_seed(seed, id_prefix)
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
    was_training = model.training
    model.eval()
    try:
        preds, gts = zip(*(track_synthetic(model, int(s), config) for s in seeds))
    finally:
        model.train(was_training)
    return evaluate_tables(pa.concat_tables(preds), pa.concat_tables(gts))
