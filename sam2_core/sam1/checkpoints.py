"""The three official SAM 1 checkpoints: where Meta publishes them and their SHA-256.

Plain data beside the SAM 1 builder (not yet served by :mod:`sam2_core.hub` or
``jobs fetch-checkpoint``). Each file is a bare state dict (``torch.save(model.state_dict())``), not ``{"model": ...}``.

Where the values come from
--------------------------
* URLs: facebookresearch/segment-anything README, "Model Checkpoints"
  (``https://dl.fbaipublicfiles.com/segment_anything/<file>``).
* SHA-256: computational-cell-analytics/micro-sam (its pooch registry of "the default segment
  anything models"); the same three values are pinned to the same URLs by many other
  independent public download scripts, Dockerfiles and manifests (one lone script pins two
  different, evidently made-up values for vit_l / vit_h; every other source agrees here).
* Sizes (bytes): public download manifests that record size and SHA-256 together (vit_b in two
  independent ones, vit_h in one); None where no trustworthy source was found. Informational.
"""

from __future__ import annotations

from dataclasses import dataclass

SAM1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class SAM1Checkpoint:
    """One official SAM 1 checkpoint file; ``name`` is the model name (``sam_vit_b``)."""

    name: str
    filename: str
    sha256: str
    size: int | None

    def url(self, base_url: str | None = None) -> str:
        """Download URL below ``base_url`` (default: Meta's)."""
        return (base_url or SAM1_BASE_URL).rstrip("/") + "/" + self.filename


SAM1_CHECKPOINTS: dict[str, SAM1Checkpoint] = {
    c.name: c
    for c in (
        SAM1Checkpoint(
            "sam_vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
        ),
        SAM1Checkpoint(
            "sam_vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            None,
        ),
        SAM1Checkpoint(
            "sam_vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
    )
}
