"""Benchmarks: tracker throughput, memory against video length, image encoder, pipeline.

Each module is one command (``python -m benchmarks.<name> --help``) that prints a
table and, with ``--json PATH``, writes the settings, figures, device and
versions to a JSON file. See benchmarks/README.md.
"""
