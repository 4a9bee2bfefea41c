"""Manifest-driven labeling runs: manifests, video reading, Ray workers, coordinator, Parquet sinks."""
