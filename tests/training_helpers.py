"""Small models for training tests (imported by test modules; not a test module itself)."""

from __future__ import annotations

from sam2_core.training.configs import small_tree


def tiny_tree() -> dict:
    """A SAM 2.1-style tree small enough to train a few steps on CPU in a test."""
    return small_tree(
        image_size=64,
        embed_dim=8,
        hidden_dim=32,
        mem_dim=16,
        attention_layers=1,
        stages=(1, 1, 1, 1),
    )
