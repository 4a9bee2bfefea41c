"""The bundled demo model on scene families it never trained on (sam2_core.synthetic_families's
held-out families) and on its own held-out set (``blobs`` seeds 0..19, the videos of
tests/test_demo_model.py): 20 videos each, one click per object, J&F as docs/DEMO_MODEL.md and
the README report them.

The floors are the shipped model's figures (measured with one torch thread, rounded down); the
issue's goal is J&F >= 0.7 on every unseen family without losing more than 0.03 on blobs.
"""

from __future__ import annotations

import pytest

from pipeline.synthetic_eval import family_jf
from sam2_core.demo_model import build_demo_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# family -> (measured J&F of the bundled model, floor held here)
SHIPPED = {
    "blobs": (0.855, 0.85),
    "shapes-on-texture": (0.209, 0.2),
    "night": (0.159, 0.15),
    "cartoon": (0.591, 0.58),
}


@pytest.fixture(scope="module")
def model():
    return build_demo_model()


@pytest.mark.parametrize("family", list(SHIPPED))
def test_demo_model_tracks_scene_families(model, family):
    report = family_jf(model, family, range(20))
    assert len(report.videos) == 20 and not report.warnings
    measured, floor = SHIPPED[family]
    assert report.jf >= floor, f"{family}: measured {measured}\n{report.format_table()}"
