"""Mask decoder: prompt tokens + image embedding -> mask logits, IoU scores, object score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import DecoderConfig
from .common import MLP, LayerNorm2d
from .precision import float32_island
from .transformer import TwoWayTransformer


@dataclass
class DecoderOutput:
    """masks: B x M x 4h x 4w logits; iou: B x M; tokens: B x M' x C (for object pointers);
    object_score_logits: B x 1."""

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    """SAM 2 mask decoder with high-resolution skip features and an object-score head.

    With ``use_high_res_features``, ``pred_obj_scores`` and ``iou_prediction_use_sigmoid`` off it
    is SAM 1's decoder (SAM 2's extends it); ``transformer`` defaults to SAM 2's two-way transformer.
    """

    def __init__(
        self,
        transformer_dim: int,
        cfg: DecoderConfig,
        num_multimask_outputs: int = 3,
        transformer: nn.Module | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        dim = transformer_dim
        self.transformer = (
            transformer
            if transformer is not None
            else TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048)
        )
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        if cfg.pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        if cfg.use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, 256, self.num_mask_tokens, 3, sigmoid_output=cfg.iou_prediction_use_sigmoid
        )
        if cfg.pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(dim, dim, 1, 3) if cfg.pred_obj_scores_mlp else nn.Linear(dim, 1)
            )

    @float32_island
    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
        repeat_image: bool = False,
    ) -> DecoderOutput:
        """image_embeddings: B x C x h x w (or 1 x ... with ``repeat_image``); sparse: B x N x C;
        dense: B x C x h x w; high_res_features: [B x C/8 x 4h x 4w, B x C/4 x 2h x 2w], or None / []
        for a decoder without them (SAM 1)."""
        masks, iou, tokens, obj_logits = self._predict(
            image_embeddings, image_pe, sparse, dense, high_res_features, repeat_image
        )
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.cfg.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._stable_or_best(masks, iou)
        else:
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        if multimask_output and self.cfg.use_multimask_token_for_obj_ptr:
            tokens = tokens[:, 1:]
        else:
            tokens = tokens[:, 0:1]
        return DecoderOutput(masks, iou, tokens, obj_logits)

    @float32_island
    def project_high_res(
        self, feat_s0: torch.Tensor, feat_s1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image encoder's two finer levels projected for the skip connections:
        B x C x 4h x 4w -> B x C/8 x 4h x 4w and B x C x 2h x 2w -> B x C/4 x 2h x 2w."""
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def _predict(self, image, image_pe, sparse, dense, high_res_features, repeat_image):
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.cfg.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
        first = 1 if self.cfg.pred_obj_scores else 0
        b = sparse.shape[0]
        tokens = torch.cat(
            [torch.cat(weights, dim=0).unsqueeze(0).expand(b, -1, -1), sparse], dim=1
        )
        src = torch.repeat_interleave(image, b, dim=0) if repeat_image else image
        src = src + dense
        pos = image_pe.expand(b, -1, -1, -1) if image_pe.shape[0] == 1 else image_pe
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        up1, ln1, act1, up2, act2 = self.output_upscaling
        if not high_res_features:
            up = act2(up2(act1(ln1(up1(src)))))
        else:
            feat_s0, feat_s1 = high_res_features
            up = act1(ln1(up1(src) + feat_s1))
            up = act2(up2(up) + feat_s0)

        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        _, uc, uh, uw = up.shape
        masks = (hyper @ up.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        iou = self.iou_prediction_head(iou_token_out)
        if self.cfg.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            obj_logits = 10.0 * iou.new_ones(iou.shape[0], 1)
        return masks, iou, mask_tokens_out, obj_logits

    def _stable_or_best(
        self, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single-mask output when it is stable under a small logit shift,
        else fall back to the best of the three multimask outputs."""
        multi, multi_iou = masks[:, 1:], iou[:, 1:]
        best = multi_iou.argmax(dim=-1)
        rows = torch.arange(multi.shape[0], device=masks.device)
        best_mask = multi[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single, single_iou = masks[:, 0:1], iou[:, 0:1]
        delta = self.cfg.dynamic_multimask_stability_delta
        flat = single.flatten(-2)
        inter = (flat > delta).sum(-1).float()
        union = (flat > -delta).sum(-1).float()
        stability = torch.where(union > 0, inter / union, torch.ones_like(inter))
        stable = stability >= self.cfg.dynamic_multimask_stability_thresh  # B x 1
        return (
            torch.where(stable[..., None, None], single, best_mask),
            torch.where(stable, single_iou, best_iou),
        )
