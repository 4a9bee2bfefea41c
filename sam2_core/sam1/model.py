"""The whole SAM 1 network: ViT image encoder, prompt encoder, mask decoder.

The prompt encoder, mask decoder and two-way transformer are SAM 2's modules (SAM 2's decoder
extends SAM 1's) configured down to SAM 1: no high-resolution skip features, no object-score
head, IoU head without sigmoid, no padding point after a box, and the token MLP under SAM 1's
parameter names. Submodule and parameter names are those of Meta's checkpoints.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import DecoderConfig
from ..modeling.common import MLPBlock
from ..modeling.mask_decoder import MaskDecoder
from ..modeling.prompt_encoder import PromptEncoder
from ..modeling.sam2 import ImageFeatures
from ..modeling.transformer import TwoWayTransformer
from ..transforms import SAM1_IMAGE_CONVENTION
from .config import SAM1Config
from .image_encoder import ImageEncoderViT

SAM1_DECODER = DecoderConfig(
    use_high_res_features=False,
    iou_prediction_use_sigmoid=False,
    pred_obj_scores=False,
    pred_obj_scores_mlp=False,
    use_multimask_token_for_obj_ptr=False,
    dynamic_multimask_via_stability=False,
)
"""SAM 2's decoder settings that make it SAM 1's decoder."""


def sam1_token_mlp(embedding_dim: int, mlp_dim: int) -> nn.Module:
    """The two-way transformer's token MLP under SAM 1's names (``lin1`` / ``lin2``)."""
    return MLPBlock(embedding_dim, mlp_dim, nn.ReLU)


class SAM1Model(nn.Module):
    """SAM 1 (ViT-B/L/H). Serves :class:`sam2_core.predictor.ImagePredictor` like SAM 2 does:
    ``encode_image``, ``sam_prompt_encoder``, ``sam_mask_decoder``, ``image_size``, ``device``
    and ``image_convention`` (SAM 1 letterboxes the image and does not clamp low-res logits)."""

    image_convention = SAM1_IMAGE_CONVENTION

    def __init__(self, cfg: SAM1Config):
        super().__init__()
        self.cfg = cfg
        dim = cfg.prompt_embed_dim
        grid = cfg.embedding_size
        self.image_encoder = ImageEncoderViT(cfg.encoder)
        self.prompt_encoder = PromptEncoder(
            dim,
            (grid, grid),
            (cfg.image_size, cfg.image_size),
            cfg.mask_in_chans,
            pad_boxed_prompts=False,
        )
        transformer = TwoWayTransformer(
            depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048, mlp_block=sam1_token_mlp
        )
        self.mask_decoder = MaskDecoder(
            dim, SAM1_DECODER, num_multimask_outputs=3, transformer=transformer
        )

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    @property
    def sam_prompt_encoder(self) -> PromptEncoder:
        """The prompt encoder under the name the image predictor uses (SAM 2's)."""
        return self.prompt_encoder

    @property
    def sam_mask_decoder(self) -> MaskDecoder:
        """The mask decoder under the name the image predictor uses (SAM 2's)."""
        return self.mask_decoder

    def set_image_size(self, image_size: int) -> None:
        """Run at another square input size (like Ultralytics' ``set_imgsz``); weights unchanged."""
        self.cfg = replace(self.cfg, image_size=image_size)
        grid = self.cfg.embedding_size
        pe = self.prompt_encoder
        pe.input_image_size = (image_size, image_size)
        pe.image_embedding_size = (grid, grid)
        pe.mask_input_size = (4 * grid, 4 * grid)

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S normalised, padded images -> ImageFeatures with the one embedding level
        (B x 256 x S/16 x S/16); SAM 1 has no high-resolution levels."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.cfg.name} expects {self.image_size} x {self.image_size} input, got {tuple(images.shape[-2:])}"
            )
        return ImageFeatures([self.image_encoder(images)], [])
