"""An official SAM 2 architecture with seeded random weights, for side-by-side benchmarks.

``python -m benchmarks.random_official --model sam2.1_hiera_tiny --output OUT`` writes
``OUT/config.json`` (``{"resolved": tree}``: Meta's YAML composed by hydra as their
``build_sam2_video_predictor`` composes it, with its default post-processing, the mask-hole
filling left out as on a build without the CUDA extension) and ``OUT/checkpoint.pt`` (Meta's
freshly initialised weights after ``torch.manual_seed(--seed)``, official format). Both
``benchmarks.bench_vs_official --model OUT/config.json --checkpoint OUT/checkpoint.pt`` sides
load them strictly, so the speeds of real model sizes can be compared without downloading
weights (needs the ``sam2`` 1.1.0 reference package).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sam2_core.official import official_checkpoint

VIDEO_PREDICTOR = "sam2.sam2_video_predictor.SAM2VideoPredictor"
# build_sam2_video_predictor(apply_postprocessing=True) without ++model.fill_hole_area=8
POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
)


def resolved_tree(name: str) -> dict:
    """Meta's config of official model ``name`` composed and resolved, as a plain tree."""
    import sam2  # noqa: F401  (registers the package's configs with hydra)
    from hydra import compose
    from omegaconf import OmegaConf

    overrides = [f"++model._target_={VIDEO_PREDICTOR}", *POSTPROCESSING]
    config = compose(config_name=official_checkpoint(name).config_file, overrides=overrides)
    return OmegaConf.to_container(config.model, resolve=True)


def write_random_official(name: str, output: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``config.json`` and ``checkpoint.pt`` of ``name`` with random weights into ``output``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    tree = resolved_tree(name)
    torch.manual_seed(seed)
    predictor = instantiate(OmegaConf.create(tree), _recursive_=True)
    output.mkdir(parents=True, exist_ok=True)
    config_path, checkpoint_path = output / "config.json", output / "checkpoint.pt"
    config_path.write_text(json.dumps({"base_config": name, "seed": seed, "resolved": tree}))
    torch.save({"model": predictor.state_dict()}, checkpoint_path)
    return config_path, checkpoint_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="official name, e.g. sam2.1_hiera_tiny")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config, checkpoint = write_random_official(args.model, args.output, args.seed)
    print(f"{config}\n{checkpoint}")


if __name__ == "__main__":
    main()
