"""J&F of a model on held-out training videos, and keeping the best checkpoint.

Each held-out object is prompted with one click where it first shows clearly (the robot
user of ``make-synthetic``'s manifests: :func:`~sam2_core.clicks.prompt_frame` and
:func:`~sam2_core.clicks.first_click`), tracked through its whole video, and scored with
``jobs evaluate``'s J&F (:func:`pipeline.evaluate.evaluate_tables`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.evaluate import EvalReport, evaluate_tables
from pipeline.synthetic_eval import tracked_table
from pipeline.video import open_video
from sam2_core.clicks import first_click, prompt_frame_of_areas
from sam2_core.modeling.sam2 import SAM2Model
from sam2_core.prompts import ObjectPrompt

from .videos import TrainingVideo

BEST_DIR = "best"
BEST_FILE = "best.json"


def click_prompts(video: TrainingVideo) -> list[ObjectPrompt]:
    """One positive click per object that shows at all, where it first shows clearly."""
    prompts = []
    for row, object_id in enumerate(video.object_ids):
        if video.areas[row].max() == 0:
            continue
        frame = prompt_frame_of_areas(video.areas[row])
        x, y = first_click(video.masks(np.array([row]), np.array([frame]))[0, 0])
        prompts.append(ObjectPrompt(object_id, frame, points=[[x, y]], labels=[1]))
    return prompts


def heldout_jf(
    model: SAM2Model, videos: Sequence[TrainingVideo], storage_options: dict | None = None
) -> EvalReport:
    """J&F of ``model`` on ``videos``, run in eval mode (the training mode is restored)."""
    was_training = model.training
    model.eval()
    preds, truths = [], []
    try:
        for video in videos:
            prompts = click_prompts(video)
            if not prompts:
                continue
            with open_video(video.frames_uri, storage_options) as reader:
                pred = tracked_table(model, video.video_id, video.frames(reader), prompts)
            if video.frame_step > 1:  # training frame t is video frame t x step, as in the truth
                column = pred.schema.get_field_index("frame_index")
                stepped = pc.multiply(pred.column(column), video.frame_step)
                pred = pred.set_column(column, pred.schema.field(column), stepped)
            preds.append(pred)
            truths.append(video.table)
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("no held-out video shows an object to score")
    return evaluate_tables(pa.concat_tables(preds), pa.concat_tables(truths))


def keep_best(output: Path, step: int, jf: float, files: Sequence[str]) -> bool:
    """Copy ``files`` of ``output`` into ``output/best/`` when ``jf`` beats the best held-out
    J&F recorded in ``best/best.json`` (kept across resumes); True when it did."""
    best = output / BEST_DIR
    record = best / BEST_FILE
    if record.is_file() and json.loads(record.read_text()).get("J&F", -1.0) >= jf:
        return False
    best.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy2(output / name, best / (name + ".tmp"))
        (best / (name + ".tmp")).replace(best / name)
    record.write_text(json.dumps({"step": step, "J&F": jf}))
    return True
