"""``python -m jobs export-onnx --model NAME_OR_CONFIG [--checkpoint C] --dest DIR``: write a
model as ONNX graphs for onnxruntime.

Writes into DIR ``image_encoder.onnx``, ``mask_decoder.onnx`` (dynamic number of prompts and
points, optional mask input) and, for SAM 2, ``memory_attention.onnx`` and
``memory_encoder.onnx`` (video tracking; ``--no-video`` skips them), plus ``model.json``
describing every graph's inputs and outputs, the preprocessing and the prompt conventions.
``sam2_core.onnx.runtime`` runs them (``OnnxModel``, ``OnnxTracker``).

``--model``: an official SAM 2 name (``sam2.1_hiera_tiny``...), a SAM 2 config file (YAML or
config.json), or a SAM 1 name (``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``). ``--checkpoint``:
its weights (path, URL, or an official SAM 2 name from the checkpoint cache); without one the
weights are random (useful for testing the graphs only).

Exit status: 0 written; 1 the model, checkpoint or destination could not be used (one line
naming it), or onnx is not installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.argtypes import int_in


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="official SAM 2 name, SAM 2 config file (YAML / config.json), or SAM 1 name (sam_vit_b/l/h)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint path or URL (default: random weights, for testing only)",
    )
    parser.add_argument(
        "--dest", required=True, help="folder to write the graphs and model.json into (created)"
    )
    parser.add_argument(
        "--image-size",
        type=int_in(16),
        default=None,
        help="SAM 1 only: square input size (a multiple of 16; default the model's 1024)",
    )
    parser.add_argument(
        "--opset", type=int_in(17, 21), default=17, help="ONNX opset (17-21, default 17)"
    )
    parser.add_argument(
        "--no-video",
        action="store_true",
        help="SAM 2: skip the memory attention and memory encoder graphs",
    )


def _build(args: argparse.Namespace):
    """The torch model named by --model, with --checkpoint loaded; ValueError etc. on bad input."""
    from sam2_core import build_model
    from sam2_core.sam1 import SAM1_CONFIGS, build_sam1

    if args.model in SAM1_CONFIGS:
        return build_sam1(args.model, args.checkpoint, image_size=args.image_size)
    if args.image_size is not None:
        raise ValueError(
            f"--image-size applies to SAM 1 models only ({', '.join(SAM1_CONFIGS)}), not {args.model!r}"
        )
    return build_model(args.model, checkpoint=args.checkpoint)


def run(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; fail here with one line

        from sam2_core.onnx import export_onnx
    except ImportError as err:
        print(
            f"error: ONNX export needs the onnx extra ({err.name} is missing): pip install 'sam2-labeler[onnx]'",
            file=sys.stderr,
        )
        return 1
    from sam2_core import CheckpointError, ConfigError
    from sam2_core.sam1 import SAM1_CONFIGS

    try:
        model = _build(args)
    except ConfigError as err:
        print(f"error: {err} (or a SAM 1 name: {', '.join(SAM1_CONFIGS)})", file=sys.stderr)
        return 1
    except (CheckpointError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        print(f"error: cannot build --model {args.model!r}: {err}", file=sys.stderr)
        return 1
    if args.checkpoint is None:
        print("note: no --checkpoint given: the graphs hold random weights", file=sys.stderr)
    dest = Path(args.dest)
    try:
        manifest = export_onnx(model, dest, opset=args.opset, video=not args.no_video)
    except OSError as err:
        print(f"error: cannot write to --dest {str(dest)!r}: {err}", file=sys.stderr)
        return 1
    for name, spec in manifest.graphs.items():
        size = (dest / spec.file).stat().st_size
        print(f"{name:17} {dest / spec.file}  ({size / 1e6:.1f} MB)")
    print(
        f"manifest          {dest / 'model.json'}  ({manifest.family}, input {manifest.image_size} x {manifest.image_size})"
    )
    return 0
