"""SAM 2's training losses: focal and dice on masks, IoU prediction, object-score BCE.

Each prediction step (a frame's first output and every output after a
corrective click) contributes. With several candidate masks only the one
with the lowest weighted focal + dice loss is trained (as SAM does); the IoU
head is trained on every candidate against the IoU the candidate really
has. Mask and IoU losses count only where the object is visible; the object
score is trained everywhere. Per-object losses are summed over steps and
divided by the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms (SAM 2's defaults) and the focal loss's parameters.

    embedding_rms (0: off, not part of SAM 2's losses) penalises image embeddings whose mean
    square exceeds 1. Training from scratch needs it: the neck has no normalisation, its
    output grows until it swamps the prompts' position encodings in the decoder's attention,
    and the model then ignores clicks (a pretrained encoder never gets there).
    """

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    iou_l1: bool = True
    embedding_rms: float = 0.0


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: N x M x H x W -> N x M."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft dice loss (smoothed by 1): N x M x H x W -> N x M."""
    prob = logits.sigmoid().flatten(2)
    tgt = target.flatten(2)
    num = 2 * (prob * tgt).sum(-1)
    den = prob.sum(-1) + tgt.sum(-1)
    return 1 - (num + 1) / (den + 1)


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each thresholded candidate with the target: N x M x H x W -> N x M (no gradient)."""
    pred = logits.detach().flatten(2) > 0
    gt = target.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def step_losses(
    mask_logits: torch.Tensor,
    pred_ious: torch.Tensor,
    object_logits: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """Unnormalised per-term sums over the N objects of one prediction step.

    mask_logits: N x M x H x W (at the target's resolution); pred_ious: N x M;
    object_logits: N x 1; target: N x H x W in {0, 1}.
    """
    tgt = target[:, None].to(mask_logits.dtype).expand_as(mask_logits)
    focal = focal_loss(mask_logits, tgt, weights.focal_alpha, weights.focal_gamma)
    dice = dice_loss(mask_logits, tgt)
    true_iou = actual_iou(mask_logits, tgt)
    if weights.iou_l1:
        iou = F.l1_loss(pred_ious.float(), true_iou, reduction="none")
    else:
        iou = F.mse_loss(pred_ious.float(), true_iou, reduction="none")
    present = target.flatten(1).any(dim=1).float()  # N
    if focal.shape[1] > 1:
        combo = focal * weights.mask + dice * weights.dice
        best = combo.argmin(dim=1)
        rows = torch.arange(focal.shape[0], device=focal.device)
        focal, dice = focal[rows, best], dice[rows, best]
    else:
        focal, dice = focal[:, 0], dice[:, 0]
    iou = iou.mean(dim=1)
    obj = F.binary_cross_entropy_with_logits(
        object_logits.float().reshape(-1), present, reduction="none"
    )
    return {
        "mask": (focal * present).sum(),
        "dice": (dice * present).sum(),
        "iou": (iou * present).sum(),
        "object_score": obj.sum(),
    }


def embedding_penalty(embedding: torch.Tensor) -> torch.Tensor:
    """How far the image embeddings' mean square exceeds 1 (0 below)."""
    return torch.relu(embedding.float().pow(2).mean() - 1.0)


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum SAM 2 back-propagates (plus the optional embedding penalty)."""
    loss = (
        weights.mask * terms["mask"]
        + weights.dice * terms["dice"]
        + weights.iou * terms["iou"]
        + weights.object_score * terms["object_score"]
    )
    if weights.embedding_rms and "embedding" in terms:
        loss = loss + weights.embedding_rms * terms["embedding"]
    return loss
