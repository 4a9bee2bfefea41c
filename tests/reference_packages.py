"""Importing the official reference packages (a test/benchmark extra) in parity tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TORCHVISION_STAND_IN = Path(__file__).resolve().parent / "reference_stubs"


def import_reference(module: str, requirement: str) -> ModuleType:
    """Import an official reference package (``segment_anything``, ``sam2``) for a parity test.

    Skips, saying what to install, only when the package is not installed. The official packages
    import torchvision, which cannot be imported beside this CPU torch: unless a working
    torchvision is present, the test-only stand-in in tests/reference_stubs is imported in its
    place (sys.path is restored afterwards; the project's own code never sees it).
    """
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{requirement} is not installed (scripts/setup.sh installs the reference packages)"
        )
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:
            for name in [
                m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")
            ]:
                del sys.modules[name]
            # Import the stand-in whole, then restore sys.path: later imports find it cached.
            sys.path.insert(0, str(TORCHVISION_STAND_IN))
            try:
                importlib.import_module("torchvision")
            finally:
                sys.path.remove(str(TORCHVISION_STAND_IN))
    return importlib.import_module(module)
