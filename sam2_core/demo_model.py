"""The bundled demo model: a small SAM 2.1-architecture network trained from scratch on
synthetic videos (see docs/DEMO_MODEL.md), small enough to ship inside the package.

It is meant for synthetic videos like those of :data:`DEMO_SYNTHETIC_CONFIG` (128 x 128,
48 frames, 1-3 objects), which it tracks from one click per object; it knows nothing of
natural images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .build import build_model
from .modeling.sam2 import SAM2Model
from .synthetic import SyntheticConfig

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_CONFIG_PATH = ASSETS_DIR / "demo_config.json"
DEMO_CHECKPOINT_PATH = ASSETS_DIR / "demo_model.pt"

DEMO_SYNTHETIC_CONFIG = SyntheticConfig(
    height=128, width=128, num_frames=48, min_objects=1, max_objects=3
)
"""The synthetic videos the demo model was trained on (training seeds >= 1000) and evaluated on
(held-out seeds 0..19); demo videos should be made with it."""


def build_demo_model(device: str | torch.device = "cpu") -> SAM2Model:
    """The bundled demo model in eval mode, loaded strictly from the package's assets."""
    for path in (DEMO_CONFIG_PATH, DEMO_CHECKPOINT_PATH):
        if not path.is_file():
            raise FileNotFoundError(
                f"bundled demo model file missing: {path} (is the package installed with its assets?)"
            )
    return build_model(str(DEMO_CONFIG_PATH), str(DEMO_CHECKPOINT_PATH), device=device)
