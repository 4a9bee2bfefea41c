"""The project's error types for a unit's input, raised where the problem is found.

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
