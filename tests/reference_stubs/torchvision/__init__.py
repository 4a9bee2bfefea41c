"""Test-only stand-in for the few torchvision names the official SAM packages import."""

from . import ops, transforms

__version__ = "0.0.0+stand-in"
__all__ = ["ops", "transforms"]
