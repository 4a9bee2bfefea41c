"""``python -m jobs import-corrections``: a reviewed export back in, as a manifest of prompts.

Compares the reviewed export (``--source``, in ``--format``) with the run's own
masks and writes ``--manifest-out``: the run's manifest with a mask prompt on
every frame a person changed, deleted objects dropped and new objects added
(see ``pipeline.corrections``). Label it into a NEW output:
``python -m jobs label --manifest M2 --output NEW_OUT``. Exit status: 0 written;
1 an input could not be read or the corrections do not fit the run (every
misfit is listed with its file and entry; nothing is written).
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import add_storage_options, other_storage_options
from pipeline.exports import READERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, help=f"one of: {', '.join(READERS)}")
    parser.add_argument("--source", required=True, help="the reviewed export folder (path or URL)")
    parser.add_argument("--run", required=True, help="the label run the export came from")
    parser.add_argument(
        "--manifest-out", required=True, help="corrected manifest to write (.jsonl, path or URL)"
    )
    parser.add_argument(
        "--manifest",
        default=None,
        help="the run's manifest (default: the one its summary.json names)",
    )
    add_storage_options(parser, "--source-storage-options", "--source and --manifest-out")


def run(args: argparse.Namespace) -> int:
    from pipeline.corrections import import_corrections

    other = other_storage_options(args, "source_storage_options")
    try:
        result = import_corrections(
            args.run,
            args.format,
            args.source,
            args.manifest_out,
            manifest=args.manifest,
            storage_options=args.storage_options,
            source_storage_options=other,
            out_storage_options=other,
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"import-corrections failed: {error}", file=sys.stderr)
        return 1
    for line in result.lines():
        print(line)
    if result.unreviewed:
        print(f"not in the export, kept as they were: {', '.join(result.unreviewed)}")
    print(
        f"{result.entries} videos written to {result.manifest_out}; label them into a new "
        f"output: python -m jobs label --manifest {result.manifest_out} --output NEW_OUTPUT"
    )
    return 0
