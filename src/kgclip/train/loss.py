"""Contrastive losses for `kgclip train`: open_clip's InfoNCE and SigLIP, and a multi-positive InfoNCE.

All three share one call, the one the training loop makes::

    loss(image_features, text_features, logit_scale, logit_bias=None, labels=None) -> scalar Tensor

Features are this process's L2-normalised embeddings ([B, D] each, as open_clip models return
them), `logit_scale` is the already exponentiated temperature, `labels` an int64 [B] tensor of
entity labels (see `entity_labels`). "clip" and "siglip" ignore `labels`; "multi_positive" needs them.

Multi-positive InfoNCE
----------------------
A harvested image's caption may be a knowledge-graph text drawn for the image's entity (train/
captions.py samples it and records `entity_id`), or its alt text (no entity). Two pairs of one
global batch that came from the same entity are not negatives of each other: "a photo of a red fox"
describes both red-fox images. So, over the global batch of N pairs (x_k, t_k) with labels l_k
(l_k = -1: no entity), image i and text j are positives iff

    j = i   or   (l_i >= 0 and l_i = l_j).

The relation is symmetric (l_i >= 0 and l_i = l_j imply l_j >= 0), so P(i), the positives of image
i among texts, equals the positives of text i among images. With logits z_ij = s<x_i, t_j> (+ b,
which cancels in a softmax) the targets are uniform over the positives,

    q_ij = 1[j in P(i)] / |P(i)|,

and the loss is the mean of the two soft-target cross-entropies, images over texts and texts over
images:

    L = 1/2 [ 1/N sum_i  -sum_j q_ij log softmax_j(z_i.)  +  1/N sum_j  -sum_i q_ji log softmax_i(z_.j) ].

Each row's term is -(1/|P(i)|) sum_{j in P(i)} log p_ij: SupCon's "L_out" (Khosla et al. 2020)
across modalities. It is H(q_i) + KL(q_i || p_i), smallest when the softmax spreads its mass evenly
over the positives.

Reduction to InfoNCE. If every non-negative label occurs once in the global batch (any number of
-1 labels allowed), then P(i) = {i} for every i, q_i. is one-hot on the diagonal, and each row term
is -log softmax_i(z_i.) = cross_entropy(z_i., i): L is term for term open_clip's ClipLoss (the mean
of the image and text cross-entropies with labels arange(N)). If some label l >= 0 occurs for i != k,
then q_i. puts 1/|P(i)| <= 1/2 on i and the same on k, not one-hot: the loss, and its gradient that
pulls image i towards text k, differ from InfoNCE. So it is InfoNCE exactly when labels are distinct.

Under DDP (world size W, B pairs per rank; every rank must hold the same B, as for open_clip's
gather) each rank gathers all features with gradient (open_clip's `gather_features`, that is
torch.distributed.nn.all_gather) and all labels (no gradient), and computes the rows of its own
pairs only, as open_clip's `ClipLoss(local_loss=True, gather_with_grad=True)` does: images
r*B .. r*B+B-1 against all N texts, and those texts against all N images, each averaged over the B
local rows. Then

- value: the mean over ranks of the rank losses L_r is L (each L_r averages B of the N rows);
- gradient: the all_gather backward sums what every rank's loss sends to a rank's features, so the
  local features receive d(sum_r L_r)/df = W dL/df; DDP averages parameter gradients over the W
  ranks, which divides by W again, and every parameter ends with dL/dtheta, the gradient of the
  single-process loss on the global batch (logit_scale, used directly by each L_r, gets
  1/W sum_r dL_r/ds = dL/ds). The same holds for open_clip's ClipLoss and SigLipLoss, whose rank
  losses also average to the global one; tests/test_train_loss.py checks all three on 2 gloo ranks.

SigLIP needs a `logit_bias` parameter in the model: create the open_clip model with
`model_init_kwargs("siglip")` (open_clip_train's --siglip values) and pass the model's `logit_bias`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss, SigLipLoss, gather_features
from torch import nn
from torch.nn import functional as F

LOSS_KINDS = ("clip", "siglip", "multi_positive")
NO_ENTITY = -1
_LABEL_MASK = (1 << 63) - 1


def entity_labels(ids: Sequence[str | None]) -> torch.Tensor:
    """int64 labels for a batch's caption entity ids: None (an alt text) -> -1, a string -> a hash.

    The label is the first 8 bytes of blake2b of the id, masked to 63 bits, so it is non-negative,
    equal ids get equal labels on every rank and in every process without a shared vocabulary, and
    two distinct ids of a batch of n collide with probability about n^2 / 2^64."""
    return torch.tensor([_entity_label(i) for i in ids], dtype=torch.int64)


def _entity_label(entity_id: str | None) -> int:
    if entity_id is None:
        return NO_ENTITY
    digest = hashlib.blake2b(entity_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _LABEL_MASK


def model_init_kwargs(kind: str) -> dict[str, float]:
    """Extra open_clip model arguments a loss needs: SigLIP learns a logit bias, initialised (with
    its own temperature) as open_clip_train does for --siglip; the softmax losses need none."""
    _check_kind(kind)
    if kind == "siglip":
        return {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}
    return {}


def make_loss(kind: str, *, rank: int, world_size: int) -> nn.Module:
    """The loss module `kind` for process `rank` of `world_size` (1 without DDP)."""
    _check_kind(kind)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not a rank of a world of size {world_size}")
    if kind == "clip":
        return InfoNCELoss(rank=rank, world_size=world_size)
    if kind == "siglip":
        return SigmoidLoss(rank=rank, world_size=world_size)
    return MultiPositiveLoss(rank=rank, world_size=world_size)


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(LOSS_KINDS)}")


class InfoNCELoss(ClipLoss):
    """open_clip's CLIP loss with the gather that scales: each rank's rows against all gathered
    features, gradient through the gather, labels cached."""

    def __init__(self, *, rank: int, world_size: int) -> None:
        super().__init__(
            local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world_size
        )

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """InfoNCE; `labels` is accepted for the shared call and not used."""
        return super().forward(image_features, text_features, logit_scale, logit_bias)


class SigmoidLoss(SigLipLoss):
    """open_clip's SigLIP loss (texts passed between neighbouring ranks, gradient included)."""

    def __init__(self, *, rank: int, world_size: int) -> None:
        super().__init__(rank=rank, world_size=world_size)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SigLIP; it needs the model's learnt bias, so a model without one fails here, clearly."""
        if logit_bias is None:
            raise ValueError(
                "the siglip loss needs logit_bias: create the model with model_init_kwargs('siglip')"
            )
        return super().forward(image_features, text_features, logit_scale, logit_bias)


class MultiPositiveLoss(nn.Module):
    """InfoNCE in which every pair drawn from the same entity is a positive (see the module doc)."""

    def __init__(self, *, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of the image->text and text->image soft-target cross-entropies of the local rows."""
        labels = _checked_labels(labels, image_features)
        all_images, all_texts, all_labels = self._gather(image_features, text_features, labels)
        logits_per_image = logit_scale * image_features @ all_texts.T
        logits_per_text = logit_scale * text_features @ all_images.T
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        rows = torch.arange(len(labels), device=labels.device) + len(labels) * self.rank
        targets = positive_targets(labels, rows, all_labels, _target_dtype(logits_per_image))
        return (
            F.cross_entropy(logits_per_image.to(targets.dtype), targets)
            + F.cross_entropy(logits_per_text.to(targets.dtype), targets)
        ) / 2

    def _gather(
        self, image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global batch: features with gradient back to their ranks, labels without."""
        if self.world_size == 1:
            return image_features, text_features, labels
        all_images, all_texts = gather_features(
            image_features,
            text_features,
            local_loss=True,
            gather_with_grad=True,
            rank=self.rank,
            world_size=self.world_size,
        )
        gathered = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(gathered, labels)
        return all_images, all_texts, torch.cat(gathered, dim=0)


def positive_targets(
    row_labels: torch.Tensor, rows: torch.Tensor, all_labels: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """[len(rows), N] targets: row k uniform over the global columns j with j == rows[k] or with
    the row's own non-negative label. The same matrix serves images over texts and texts over
    images, because the positive relation is symmetric."""
    columns = torch.arange(len(all_labels), device=all_labels.device)
    own_pair = rows[:, None] == columns[None, :]
    same_entity = (row_labels[:, None] >= 0) & (row_labels[:, None] == all_labels[None, :])
    positives = (own_pair | same_entity).to(dtype)
    return positives / positives.sum(dim=1, keepdim=True)


def _checked_labels(labels: torch.Tensor | None, image_features: torch.Tensor) -> torch.Tensor:
    """The labels as int64 on the features' device; a missing or misshapen batch is a loop bug."""
    if labels is None:
        raise ValueError("the multi_positive loss needs labels: entity_labels() of the batch's entity ids")
    if labels.shape != image_features.shape[:1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} for {image_features.shape[0]} samples")
    return labels.to(device=image_features.device, dtype=torch.int64)


def _target_dtype(logits: torch.Tensor) -> torch.dtype:
    """At least float32: targets such as 1/3 in bf16 would not sum to one."""
    return torch.promote_types(logits.dtype, torch.float32)
