"""The project's error types: a unit's bad input, and a run that cannot proceed.

:mod:`pipeline.retry` classifies failures by these types rather than by
Python's built-in ones, which bugs raise too: an ``InputError`` is the
user's to fix (another attempt would fail the same way), while an unexpected
``KeyError`` or ``TypeError`` is the labeler's own bug.
"""

from __future__ import annotations


class InputError(ValueError):
    """A unit's input is wrong: an undecodable video, a prompt the video cannot hold.

    Permanent. The message names the file (URI without credentials) or the
    manifest line, and what is wrong with it.
    """


class RunFatalError(RuntimeError):
    """The run cannot proceed at all (bad checkpoint, unreachable output or Ray, no worker can
    start). The command line maps it to :attr:`exit_code` in one place (``jobs.__main__``)."""

    exit_code = 1
