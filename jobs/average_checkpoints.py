"""``python -m jobs average-checkpoints``: average the weights of several checkpoints of one model.

Writes OUTPUT/model.pt (official format) and OUTPUT/config.json (the model tree, with the
inputs and their SHA-256 as the record), only after the average has loaded strictly into the
config's model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints", nargs="+", help="checkpoints to average (official format), at least two"
    )
    parser.add_argument("--output", required=True, help="folder for model.pt and config.json")
    parser.add_argument(
        "--config",
        default=None,
        help="model config (official name or file; default: the config.json of the first checkpoint's training run)",
    )


def config_beside(checkpoint: str) -> Path:
    """The training run's config.json for RUN/model.pt or RUN/checkpoints/step_N.pt."""
    from sam2_core.training import CONFIG_FILE

    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / CONFIG_FILE


def run(args: argparse.Namespace) -> int:
    import torch

    from sam2_core.checkpoint import CheckpointError, load_state_dict_strict, read_state_dict
    from sam2_core.hub import read_bytes, sha256_bytes
    from sam2_core.training import (
        CONFIG_FILE,
        MODEL_FILE,
        average_state_dicts,
        build_for_training,
        load_tree,
    )

    try:
        if len(args.checkpoints) < 2:
            raise ValueError("give at least two checkpoints to average")
        config = args.config or str(config_beside(args.checkpoints[0]))
        tree = load_tree(config)
        data = [read_bytes(c, what="checkpoint") for c in args.checkpoints]
        states = [read_state_dict(d, c) for d, c in zip(data, args.checkpoints)]
        averaged = average_state_dicts(states, args.checkpoints)
        model, _ = build_for_training(tree)
        load_state_dict_strict(model, averaged, f"the average of {', '.join(args.checkpoints)}")
        record = {
            "averaged": [
                {"checkpoint": c, "sha256": sha256_bytes(d)} for c, d in zip(args.checkpoints, data)
            ],
            "command": "python -m jobs average-checkpoints " + " ".join(sys.argv[2:]),
            "config": config,
        }
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"model": averaged}, out / MODEL_FILE)
        (out / CONFIG_FILE).write_text(
            json.dumps({"resolved": tree, "training": record}, indent=1) + "\n"
        )
    except (ValueError, FileNotFoundError, OSError, CheckpointError) as err:
        print(f"average-checkpoints: {err}", file=sys.stderr)
        return 1
    print(
        f"averaged {len(states)} checkpoints of {sum(t.numel() for t in averaged.values()):,} values: {out / MODEL_FILE}"
    )
    return 0
