"""``python -m jobs fetch-checkpoint NAME``: download an official checkpoint and verify its SHA-256.

The file is streamed from Meta's published URL (the table in ``sam2_core.official``)
to a temporary file while it is hashed; only a file whose SHA-256 matches the
table is written to ``--dest`` (a local path or any fsspec URL, e.g.
``s3://bucket/ckpts/``; default: the checkpoint cache, ``$SAM2_LABELER_CACHE``
or ``~/.cache/sam2-labeler``, where labeling workers given the name look). A
verified copy already at ``--dest`` is kept and nothing is downloaded (unless
``--force``).

The base URL can point at a mirror with the official layout
(``<base>/092824/sam2.1_hiera_tiny.pt``): ``--base-url`` or
``$SAM2_CHECKPOINT_BASE_URL``.

Exit status: 0 verified (or, with --allow-unverified, kept without a known
checksum); 1 anything else (unknown name, unreachable URL, SHA-256 mismatch,
no known checksum, storage error). Nothing is left at ``--dest`` on failure.
"""

from __future__ import annotations

import argparse
import sys

from jobs.argtypes import json_object, positive_float
from sam2_core import hub


def _sha256_hex(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"expected a SHA-256 as 64 hex digits, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help=f"official checkpoint: {', '.join(hub.checkpoint_files())}",
    )
    parser.add_argument(
        "--dest",
        default=None,
        help=f"where to write it: a file path/URL, or a folder ending in '/' (default ${hub.ENV_CACHE} or {hub.DEFAULT_CACHE_DIR}, /NAME.pt)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even if a verified copy is at --dest"
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help=f"download from this mirror of the official layout (default ${hub.ENV_BASE_URL} or Meta's URL)",
    )
    parser.add_argument(
        "--sha256",
        type=_sha256_hex,
        default=None,
        help="expected SHA-256, instead of the table's (e.g. for a file you checked yourself)",
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="keep the file when no checksum is known (it is reported as not verified)",
    )
    parser.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        help="JSON object of fsspec storage options for --dest (e.g. S3 endpoint, keys)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        help="seconds to wait for the server on connect and on each read (default 60)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the official checkpoints (name, SHA-256, URL) and exit",
    )


def _print_table(base_url: str | None) -> None:
    for entry in hub.checkpoint_files().values():
        print(f"{entry.name:24} {entry.sha256 or '(no known sha256)':64}  {entry.url(base_url)}")


def run(args: argparse.Namespace) -> int:
    base_url = args.base_url or hub.base_url_default()
    if args.list:
        _print_table(base_url)
        return 0
    names = ", ".join(hub.checkpoint_files())
    if not args.name:
        print(f"error: give a checkpoint NAME; official names: {names}", file=sys.stderr)
        return 1
    entry = hub.checkpoint_files().get(args.name)
    if entry is None:
        print(f"error: unknown checkpoint {args.name!r}; official names: {names}", file=sys.stderr)
        return 1
    try:
        result = hub.fetch_official(
            entry,
            args.dest,
            base_url=base_url,
            expected_sha256=args.sha256,
            force=args.force,
            allow_unverified=args.allow_unverified,
            storage_options=args.storage_options,
            timeout=args.timeout,
        )
    except hub.FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"error: {entry.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    status = "verified" if result.verified else "not verified: no known checksum"
    print(f"{entry.name}: {status}; sha256 {result.sha256}, {result.size} bytes -> {result.dest}")
    return 0
