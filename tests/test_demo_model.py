"""The bundled demo model: it loads strictly from the package's assets and tracks held-out
synthetic videos (seeds never used in training) from one click per object.

The issue asks for J&F >= 0.85 over held-out videos; the check below tracks all 20 of them (seeds
0..19, the figure docs/DEMO_MODEL.md and the README report) and holds the model to it.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.synthetic_eval import synthetic_jf
from sam2_core.checkpoint import read_state_dict
from sam2_core.config_tree import config_from_document
from sam2_core.demo_model import (
    DEMO_CHECKPOINT_PATH,
    DEMO_CONFIG_PATH,
    DEMO_SYNTHETIC_CONFIG,
    build_demo_model,
)
from sam2_core.hub import read_bytes
from sam2_core.synthetic import SyntheticConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_model_loads_strictly_and_is_small():
    model = build_demo_model()
    assert not model.training
    state = read_state_dict(read_bytes(str(DEMO_CHECKPOINT_PATH)), str(DEMO_CHECKPOINT_PATH))
    own = model.state_dict()
    assert set(state) == set(own)
    for name, tensor in state.items():
        assert torch.equal(tensor.to(own[name].dtype), own[name]), name  # stored as float16
    assert DEMO_CHECKPOINT_PATH.stat().st_size < 10 * 2**20
    doc = json.loads(DEMO_CONFIG_PATH.read_text())
    assert config_from_document(doc) == config_from_document({"resolved": doc["resolved"]})
    training = doc["training"]
    evaluation = training["evaluation"]
    # recorded before later options existed: their defaults make the same videos
    assert SyntheticConfig(**evaluation["synthetic"]) == DEMO_SYNTHETIC_CONFIG
    # every training phase drew seeds >= first_seed only, so the held-out seeds were never seen
    assert all(phase["first_seed"] > max(evaluation["seeds"]) for phase in training["phases"])
    assert evaluation["seeds"] == list(range(20)) and evaluation["objects"] > 20


@pytest.mark.slow
def test_demo_model_tracks_held_out_synthetic_videos():
    model = build_demo_model()
    report = synthetic_jf(model, range(20), DEMO_SYNTHETIC_CONFIG)
    assert len(report.videos) == 20 and len(report.objects) == 50 and not report.warnings
    # measured 0.855 (J 0.843, F 0.867) with one torch thread; an untrained model scores about 0.1
    assert report.jf >= 0.85, report.format_table()
