"""The retry rule of a labeling run, in one place.

Which errors are transient (worth another attempt on a fresh worker), how many
attempts a unit gets, how long to wait between them, and how long one attempt
may run. The coordinator asks this module and nothing else.

Errors are classified by the types their sources raise, not guessed from
Python's built-in types (which bugs raise too):

- transient: a worker, actor or node went away (Ray system errors), an object
  was lost, the storage failed with an I/O error or a timeout, the unit ran
  past its deadline (no progress for too long, or past its hard cap), or memory
  ran out -- on the host (``MemoryError``, Ray's
  memory monitor) or on the device (``torch.OutOfMemoryError``, "CUDA out of
  memory"), which depends on what else shares the machine at that moment.
- permanent: the input is wrong -- :class:`pipeline.errors.InputError`
  (an undecodable video, a prompt past the video's end; the message names the
  file or manifest line) or a missing or forbidden file. Another attempt
  would fail the same way.
- bug: anything else (``KeyError``, ``TypeError``, a bare ``ValueError`` or
  ``RuntimeError`` ...): the labeler's own fault, not the input's. Not retried
  either -- a deterministic bug retried K times only costs K times the
  compute, and a later run (resume) re-tries every uncommitted unit anyway --
  and :func:`describe` says that it looks like a bug and where it was raised.
"""

from __future__ import annotations

import math
import random
import re
import sys
import traceback
from dataclasses import dataclass

from pipeline.errors import InputError

TRANSIENT = "transient"
PERMANENT = "permanent"
BUG = "bug"


class UnitTimeoutError(TimeoutError):
    """A unit ran past its per-unit deadline; its worker was stopped."""


# OSError subclasses that describe the input, not a flaky store.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
# How torch and its backends word a device allocation failure (older torch raised a plain
# RuntimeError; torch >= 2.5 raises torch.OutOfMemoryError, a RuntimeError too).
_DEVICE_OOM_TEXT = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "HIP out of memory",
    "MPS backend out of memory",
    "XPU out of memory",
)


def _ray_transient_types() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    names = (
        "RayActorError",  # includes ActorDiedError, ActorUnavailableError
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",  # includes OwnerDiedError, ObjectReconstructionFailedError
        "LocalRayletDiedError",
        "RaySystemError",
        "OutOfMemoryError",
        "TaskCancelledError",
        "ActorPlacementGroupRemoved",
    )
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def _storage_transient_types() -> tuple[type[BaseException], ...]:
    """Network errors of the object-store clients that are not OSError subclasses."""
    found: list[type[BaseException]] = []
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        found += [BotoConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        found.append(ClientError)
    except ImportError:
        pass
    return tuple(found)


def root_cause(error: BaseException) -> BaseException:
    """The user-level exception behind a Ray task error (the worker's own exception)."""
    try:
        from ray.exceptions import RayTaskError
    except ImportError:  # pragma: no cover - ray is a hard dependency
        return error
    seen = 0
    while (
        isinstance(error, RayTaskError) and getattr(error, "cause", None) is not None and seen < 8
    ):
        error = error.cause
        seen += 1
    return error


def is_device_oom(error: BaseException) -> bool:
    """True for a GPU (or other accelerator) allocation failure raised by torch."""
    torch = sys.modules.get("torch")  # a torch error can only exist where torch is imported
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and any(t in str(error) for t in _DEVICE_OOM_TEXT)


def classify(error: BaseException) -> str:
    """TRANSIENT, PERMANENT or BUG for an error raised by (or about) one unit attempt."""
    cause = root_cause(error)
    if isinstance(cause, UnitTimeoutError):
        return TRANSIENT
    if isinstance(cause, _ray_transient_types()):
        return TRANSIENT
    if isinstance(cause, MemoryError) or is_device_oom(cause):
        return TRANSIENT
    if isinstance(cause, InputError):
        return PERMANENT
    if isinstance(cause, _PERMANENT_OS_ERRORS):
        return PERMANENT
    if isinstance(cause, (OSError, TimeoutError, ConnectionError)):
        return TRANSIENT
    if isinstance(cause, _storage_transient_types()):
        return TRANSIENT
    return BUG


def describe(error: BaseException) -> tuple[str, str]:
    """(error type name, one-line message) of the root cause, for failures/ rows.

    A BUG's message says so and names the line that raised it, so that nobody goes
    looking for a fault in the video or the prompts.
    """
    cause = root_cause(error)
    message = str(cause).strip().splitlines()
    text = message[0] if message else ""
    # Ray wraps worker tracebacks into the message; keep the last meaningful line.
    for line in reversed(message):
        if line.strip() and not line.startswith(" "):
            text = line.strip()
            break
    name = type(cause).__name__
    if classify(cause) == BUG:
        where = _raised_at(error, cause)
        text = (
            f"unexpected {name}{f' at {where}' if where else ''}: this looks like a bug in the "
            f"labeler, not a problem with the video or its prompts (please report it): {text}"
        )
    return name, text[:2000]


_FRAME_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _raised_at(error: BaseException, cause: BaseException) -> str:
    """``file:line (function)`` of the innermost frame that raised ``cause``, if known: from
    its traceback in this process, or from the text of a Ray task error's remote traceback."""
    if cause.__traceback__ is not None:
        frame = traceback.extract_tb(cause.__traceback__)[-1]
        return f"{frame.filename}:{frame.lineno} ({frame.name})"
    found = _FRAME_LINE.findall(str(getattr(error, "traceback_str", "") or ""))
    if found:
        filename, line, function = found[-1]
        return f"{filename}:{line} ({function})"
    return ""


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, backoff and deadline of one unit.

    max_attempts: attempts per unit including the first (>= 1).
    backoff_s / backoff_max_s: wait before attempt k+1 is backoff_s * 2**(k-1), capped,
        with up to 25 % random jitter so retried units do not stampede together.
    stall_timeout_s: how long a started attempt may go without tracking a new frame before
        its worker is stopped (None: no limit). A long video is judged by its progress, not
        by its length.
    max_unit_s: an optional hard cap on one attempt's time from its start (None: no cap).
    """

    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    stall_timeout_s: float | None = 600.0
    max_unit_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff_s}, {self.backoff_max_s}")
        for name in ("stall_timeout_s", "max_unit_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {value}")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a unit whose attempt number `attempt` (1-based) failed with `error` runs again."""
        return classify(error) == TRANSIENT and attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        base = min(self.backoff_max_s, self.backoff_s * (2 ** max(0, attempt - 1)))
        jitter = (rng or random).uniform(0.0, 0.25) * base
        return base + jitter
