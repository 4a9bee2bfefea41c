"""The retry rule of a labeling run, in one place.

Which errors are transient (worth another attempt on a fresh worker), how many
attempts a unit gets, how long to wait between them, and how long one attempt
may run. The coordinator asks this module and nothing else.

Transient: a worker, actor or node went away (Ray system errors), an object
was lost, the storage failed with an I/O error or a timeout, or the unit ran
past its deadline (no progress for too long, or past its hard cap). Permanent: the input itself is wrong (a corrupt video, a
prompt past the video's end, malformed prompts, a missing file) -- another
attempt would fail the same way. Errors of any other type are treated as
permanent too: a deterministic bug retried K times only costs K times the
compute, and a later run (resume) re-tries every uncommitted unit anyway.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pipeline.video import VideoDecodeError

TRANSIENT = "transient"
PERMANENT = "permanent"


class UnitTimeoutError(TimeoutError):
    """A unit ran past its per-unit deadline; its worker was stopped."""


# OSError subclasses that describe the input, not a flaky store.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


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


def classify(error: BaseException) -> str:
    """TRANSIENT or PERMANENT for an error raised by (or about) one unit attempt."""
    cause = root_cause(error)
    if isinstance(cause, UnitTimeoutError):
        return TRANSIENT
    if isinstance(cause, _ray_transient_types()):
        return TRANSIENT
    if isinstance(cause, (VideoDecodeError, ValueError, KeyError, TypeError)):
        return PERMANENT
    if isinstance(cause, _PERMANENT_OS_ERRORS):
        return PERMANENT
    if isinstance(cause, (OSError, TimeoutError, ConnectionError, MemoryError)):
        return TRANSIENT
    if isinstance(cause, _storage_transient_types()):
        return TRANSIENT
    return PERMANENT


def describe(error: BaseException) -> tuple[str, str]:
    """(error type name, one-line message) of the root cause, for failures/ rows."""
    cause = root_cause(error)
    message = str(cause).strip().splitlines()
    text = message[0] if message else ""
    # Ray wraps worker tracebacks into the message; keep the last meaningful line.
    for line in reversed(message):
        if line.strip() and not line.startswith(" "):
            text = line.strip()
            break
    return type(cause).__name__, text[:2000]


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
