"""Dispatch ``python -m jobs <command>`` to the module that implements it.

Each command lives in its own module ``jobs.<command>`` exposing
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

COMMANDS = {
    "label": "Label the videos of a manifest into Parquet mask tables.",
    "submit": "Send a label run to a Ray cluster as a Ray job.",
    "train": "Fine-tune or train a SAM 2 model on videos with ground truth.",
    "average-checkpoints": "Average the weights of several checkpoints of one model (a model soup).",
    "evaluate": "Score a mask table against ground truth (J&F).",
    "export": "Write a run's masks as COCO, YouTube-VIS, DAVIS, SA-V, CVAT, Label Studio or YOLO.",
    "fetch-checkpoint": "Download an official checkpoint and verify its SHA-256.",
    "export-onnx": "Write a SAM 2 or SAM 1 model as ONNX graphs (image encoder, decoder, video memory) for onnxruntime.",
    "make-synthetic": "Write synthetic videos with ground truth and a prompt manifest.",
    "demo": "Generate sample videos, label them with the bundled model, and report.",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The full command-line parser and each command's runner."""
    parser = argparse.ArgumentParser(prog="python -m jobs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for name, help_text in COMMANDS.items():
        module_name = "jobs." + name.replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        runners[name] = module.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    """Run one command; a run that cannot proceed at all ends with one line and exit 1."""
    from pipeline.errors import RunFatalError

    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(runners[args.command](args))
    except RunFatalError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
