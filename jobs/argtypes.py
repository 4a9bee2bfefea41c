"""Argument types shared by the commands: each rejects a bad value with a message naming it.

Numbers are checked to be finite and in range here, so that ``nan`` or ``inf`` never reaches
a comparison that it would silently pass (``nan > limit`` is False: a disabled limit).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable


def json_object(text: str) -> dict:
    """A JSON object, e.g. --storage-options '{"client_kwargs": {"endpoint_url": "..."}}'.

    The text is never echoed back: storage options may hold keys and secrets.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno}; the text is not shown "
            "as it may hold credentials)"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object, got a JSON {type(value).__name__}"
        )
    return value


def _bounds(low: float | None, high: float | None, low_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " and ".join(parts)


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (either end may be open-ended: None)."""
    wanted = " ".join(filter(None, ["an integer", _bounds(low, high, False)]))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


def float_in(
    low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] with ``low_open``)."""
    wanted = " ".join(filter(None, ["a finite number", _bounds(low, high, low_open)]))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if low_open else value < low))
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
non_negative_float = float_in(0.0)
positive_float = float_in(0.0, low_open=True)
probability = float_in(0.0, 1.0)


def add_storage_options(
    parser: argparse.ArgumentParser, second: str | None = None, second_help: str = ""
) -> None:
    """``--storage-options`` (fsspec options for ``--run``) and, when `second` names another
    flag (e.g. ``--dest-storage-options``), options for the other side that default to them."""
    parser.add_argument(
        "--storage-options", type=json_object, default=None, help="fsspec options for --run"
    )
    if second is not None:
        parser.add_argument(
            second,
            type=json_object,
            default=None,
            help=f"fsspec options for {second_help} (default: those of --run)",
        )


def other_storage_options(args: argparse.Namespace, name: str) -> dict | None:
    """The second set of storage options named `name`, or the run's when it was not given."""
    value = getattr(args, name)
    return args.storage_options if value is None else value
