"""``python -m jobs fetch-checkpoint NAME``: download an official checkpoint and verify its SHA-256.

The file is streamed from Meta's published URL (``sam2_core.official_checkpoints``)
to a temporary file while it is hashed; only a file whose SHA-256 matches the
table is written to ``--dest`` (a local path or any fsspec URL, e.g.
``s3://bucket/ckpts/``). A verified copy already at ``--dest`` is kept and
nothing is downloaded (unless ``--force``).

The base URL can point at a mirror with the official layout
(``<base>/092824/sam2.1_hiera_tiny.pt``): ``--base-url`` or
``$SAM2_CHECKPOINT_BASE_URL``.

Exit status: 0 verified (or, with --allow-unverified, kept without a known
checksum); 1 anything else (unknown name, unreachable URL, SHA-256 mismatch,
no known checksum, storage error). Nothing is left at ``--dest`` on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from jobs.argtypes import json_object, positive_float
from sam2_core.official_checkpoints import OFFICIAL_CHECKPOINTS, OfficialCheckpoint

ENV_BASE_URL = "SAM2_CHECKPOINT_BASE_URL"
DEFAULT_CACHE_DIR = "~/.cache/sam2-labeler"
_CHUNK = 1 << 20


class FetchError(Exception):
    """The checkpoint could not be fetched and verified; the message says why and what to do."""


class UnverifiedError(FetchError):
    """No known checksum and --allow-unverified not given: the file was not kept."""


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_checkpoint`` did.

    Attributes:
        dest: where the checkpoint now is (local path or URL).
        sha256: its SHA-256 (hex).
        size: its size in bytes.
        verified: the SHA-256 matched a known value.
        downloaded: False when a verified copy was already at ``dest``.
    """

    dest: str
    sha256: str
    size: int
    verified: bool
    downloaded: bool



def _sha256_hex(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(f"expected a SHA-256 as 64 hex digits, got {text!r}")
    return value



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"official checkpoint: {', '.join(OFFICIAL_CHECKPOINTS)}")
    parser.add_argument("--dest", default=None, help=f"where to write it: a file path/URL, or a folder ending in '/' (default {DEFAULT_CACHE_DIR}/NAME.pt)")
    parser.add_argument("--force", action="store_true", help="download again even if a verified copy is at --dest")
    parser.add_argument("--base-url", default=None, help=f"download from this mirror of the official layout (default ${ENV_BASE_URL} or Meta's URL)")
    parser.add_argument("--sha256", type=_sha256_hex, default=None, help="expected SHA-256, instead of the table's (e.g. for a file you checked yourself)")
    parser.add_argument("--allow-unverified", action="store_true", help="keep the file when no checksum is known (it is reported as not verified)")
    parser.add_argument("--storage-options", type=json_object, default=None, help="JSON object of fsspec storage options for --dest (e.g. S3 endpoint, keys)")
    parser.add_argument("--timeout", type=positive_float, default=60.0, help="seconds to wait for the server on connect and on each read (default 60)")
    parser.add_argument("--list", action="store_true", help="print the official checkpoints (name, SHA-256, URL) and exit")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_dest(dest: str | None, filename: str, storage_options: dict | None = None) -> str:
    """The file URI to write: ``dest`` itself, or ``filename`` inside it when it is a folder."""
    from pipeline.storage import url_to_fs

    if dest is None:
        return os.path.join(os.path.expanduser(DEFAULT_CACHE_DIR), filename)
    if "://" not in dest:
        dest = os.path.expanduser(dest)
    if dest.endswith("/"):
        return dest + filename
    fs, path = url_to_fs(dest, storage_options)
    if fs.isdir(path):
        return dest.rstrip("/") + "/" + filename
    return dest


def _hash_file(fs, path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _download(url: str, out, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into the open binary file ``out``; (sha256 hex, bytes)."""
    request = urllib.request.Request(url, headers={"User-Agent": "sam2-labeler fetch-checkpoint"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise FetchError(f"download failed: HTTP {err.code} {err.reason} for {url}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(
            f"cannot reach {url}: {reason}\n"
            f"(no network to that host? point --base-url or ${ENV_BASE_URL} at a mirror with the official layout)"
        ) from err
    from tqdm import tqdm

    h = hashlib.sha256()
    size = 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], file=sys.stderr, disable=None) as bar:
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as err:
                raise FetchError(f"download of {url} broke off after {size} bytes: {type(err).__name__}: {err}") from err
    if total is not None and size != total:
        raise FetchError(f"download of {url} is truncated: got {size} of {total} bytes")
    return h.hexdigest(), size


def fetch_checkpoint(
    entry: OfficialCheckpoint,
    dest: str | None = None,
    *,
    base_url: str | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    allow_unverified: bool = False,
    storage_options: dict | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] = _log,
) -> FetchResult:
    """Download ``entry`` to ``dest`` (see the module docstring); FetchError when it cannot be verified.

    ``expected_sha256`` replaces the table's value. Without any known value the
    file is kept only with ``allow_unverified`` (UnverifiedError otherwise).
    """
    from pipeline.storage import is_local, url_to_fs

    expected = expected_sha256 or entry.sha256
    target = resolve_dest(dest, entry.filename, storage_options)
    fs, path = url_to_fs(target, storage_options)
    fs.invalidate_cache()

    if not force and fs.exists(path):
        digest, size = _hash_file(fs, path)
        if expected is not None and digest == expected:
            log(f"{entry.name}: verified copy already at {target} (sha256 {digest}); nothing downloaded")
            return FetchResult(target, digest, size, verified=True, downloaded=False)
        if expected is None:
            message = f"{entry.name}: existing copy at {target} has sha256 {digest} ({size} bytes): not verified: no known checksum"
            if not allow_unverified:
                raise UnverifiedError(message + " (pass --allow-unverified to accept it, --sha256 HEX to check it, or --force to download again)")
            log(message)
            return FetchResult(target, digest, size, verified=False, downloaded=False)
        log(f"{entry.name}: existing copy at {target} does not match (sha256 {digest}); downloading again")

    url = entry.url(base_url)
    local = is_local(fs)
    if local:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{entry.filename}.", suffix=".part")
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"{entry.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            log(f"{entry.name}: downloading {url}")
            digest, size = _download(url, out, timeout)
        size_note = f"{size} bytes" + (f", the official file has {entry.size}" if entry.size is not None and size != entry.size else "")
        if expected is None:
            message = f"{entry.name}: sha256 {digest} ({size_note}): not verified: no known checksum"
            if not allow_unverified:
                raise UnverifiedError(
                    message + f"; nothing was written to {target} (pass --allow-unverified to keep it anyway, "
                    "or --sha256 HEX with a value you trust)"
                )
            log(message)
        elif digest != expected:
            raise FetchError(
                f"{entry.name}: SHA-256 mismatch for {url}: expected {expected}, got {digest} ({size_note}); "
                f"the file was refused and nothing was written to {target}"
            )
        if local:
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
            fs.invalidate_cache()
            stored = fs.size(path)
            if stored != size:
                raise FetchError(f"{target}: stored size {stored} differs from the {size} bytes uploaded")
    except OSError as err:
        raise FetchError(f"{entry.name}: could not write {target}: {type(err).__name__}: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return FetchResult(target, digest, size, verified=expected is not None, downloaded=True)


def _print_table(base_url: str | None) -> None:
    for entry in OFFICIAL_CHECKPOINTS.values():
        print(f"{entry.name:24} {entry.sha256 or '(no known sha256)':64}  {entry.url(base_url)}")


def run(args: argparse.Namespace) -> int:
    base_url = args.base_url or os.environ.get(ENV_BASE_URL) or None
    if args.list:
        _print_table(base_url)
        return 0
    if not args.name:
        print(f"error: give a checkpoint NAME; official names: {', '.join(OFFICIAL_CHECKPOINTS)}", file=sys.stderr)
        return 1
    entry = OFFICIAL_CHECKPOINTS.get(args.name)
    if entry is None:
        print(f"error: unknown checkpoint {args.name!r}; official names: {', '.join(OFFICIAL_CHECKPOINTS)}", file=sys.stderr)
        return 1
    try:
        result = fetch_checkpoint(
            entry,
            args.dest,
            base_url=base_url,
            expected_sha256=args.sha256,
            force=args.force,
            allow_unverified=args.allow_unverified,
            storage_options=args.storage_options,
            timeout=args.timeout,
        )
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"error: {entry.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    status = "verified" if result.verified else "not verified: no known checksum"
    print(f"{entry.name}: {status}; sha256 {result.sha256}, {result.size} bytes -> {result.dest}")
    return 0
