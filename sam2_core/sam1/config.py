"""SAM 1 model configuration: frozen dataclasses and the three official models by name."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ViTConfig:
    """SAM 1's ViT image encoder (ViTDet style: windowed blocks, a few global ones).

    pretrain_image_size fixes the shapes of ``pos_embed`` and of the global blocks' relative
    position tables (what the checkpoints hold); the input size used at run time is
    :attr:`SAM1Config.image_size`, and both tables are resized to it on the fly.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256
    pretrain_image_size: int = 1024


@dataclass(frozen=True)
class SAM1Config:
    """A whole SAM 1 model. ``image_size`` is the square input side at run time (a multiple of
    the patch size); prompt embedding width, mask-input channels and the decoder are fixed by
    the official architecture."""

    name: str = "sam_vit_b"
    encoder: ViTConfig = field(default_factory=ViTConfig)
    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16

    def __post_init__(self) -> None:
        p = self.encoder.patch_size
        for what, size in (
            ("image_size", self.image_size),
            ("pretrain_image_size", self.encoder.pretrain_image_size),
        ):
            if size <= 0 or size % p:
                raise ValueError(
                    f"{self.name}: {what} must be a positive multiple of the patch size {p}, got {size}"
                )
        bad = [i for i in self.encoder.global_attn_indexes if not 0 <= i < self.encoder.depth]
        if bad:
            raise ValueError(
                f"{self.name}: global_attn_indexes {bad} outside a depth of {self.encoder.depth}"
            )

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid at run time."""
        return self.image_size // self.encoder.patch_size


SAM1_CONFIGS: dict[str, SAM1Config] = {
    "sam_vit_b": SAM1Config("sam_vit_b", ViTConfig(768, 12, 12, (2, 5, 8, 11))),
    "sam_vit_l": SAM1Config("sam_vit_l", ViTConfig(1024, 24, 16, (5, 11, 17, 23))),
    "sam_vit_h": SAM1Config("sam_vit_h", ViTConfig(1280, 32, 16, (7, 15, 23, 31))),
}
"""The official models (Meta's ``build_sam_vit_b/l/h``), by the names used here."""


def sam1_config(name: str, image_size: int | None = None) -> SAM1Config:
    """The official config ``name``, optionally at another input size (weights unchanged)."""
    try:
        cfg = SAM1_CONFIGS[name]
    except KeyError:
        raise KeyError(
            f"unknown SAM 1 model {name!r}; official names: {', '.join(SAM1_CONFIGS)}"
        ) from None
    return cfg if image_size is None else replace(cfg, image_size=image_size)
