"""Command-line entry points: ``python -m jobs <command> ...``."""
