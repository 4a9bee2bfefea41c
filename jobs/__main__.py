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
    "submit": "Send a label run to a Ray cluster as a Ray job (`submit train ...`: a training run).",
    "submit-train": "Send a training run to a Ray cluster as a Ray job (the same as `submit train`).",
    "train": "Fine-tune or train a SAM 2 model on videos with ground truth.",
    "average-checkpoints": "Average the weights of several checkpoints of one model (a model soup).",
    "evaluate": "Score a mask table against ground truth (J&F).",
    "export": "Write a run's masks as COCO, YouTube-VIS, DAVIS, SA-V, CVAT, Label Studio or YOLO.",
    "import-corrections": "Turn a reviewed export into a manifest whose prompts carry the fixes.",
    "review": "Rank a run's (video, object, frames) by doubt into review.parquet.",
    "preview": "Render a run's masks over its videos (GIF/MP4 and PNG strips, ids drawn).",
    "fetch-checkpoint": "Download an official checkpoint and verify its SHA-256.",
    "export-onnx": "Write a SAM 2 or SAM 1 model as ONNX graphs (image encoder, decoder, video memory) for onnxruntime.",
    "make-synthetic": "Write synthetic videos with ground truth and a prompt manifest.",
    "demo": "Generate sample videos, label them with the bundled model, and report.",
}


def _command_module(name: str):
    """The module implementing command ``name`` (imported on demand: a command's heavy imports,
    torch or Ray, happen only when that command runs or prints its own help)."""
    return importlib.import_module("jobs." + name.replace("-", "_"))


def build_parser(
    only: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The command-line parser and each command's runner.

    Every command is listed (with its one-line help); the options and runner of a command are
    loaded for all commands, or with ``only``, for that command alone (none for ``only=""``).
    """
    parser = argparse.ArgumentParser(prog="python -m jobs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        module = _command_module(name)
        module.add_arguments(p)
        runners[name] = module.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    """Run one command; a run that cannot proceed at all ends with one line and exit 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["submit", "train"]:
        argv = ["submit-train", *argv[2:]]
    # The top-level parser has no options of its own besides --help, so the command comes first.
    parser, runners = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else "")
    args = parser.parse_args(argv)
    from pipeline.errors import RunFatalError

    try:
        return int(runners[args.command](args))
    except RunFatalError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
