"""The training losses: multi-positive InfoNCE against open_clip's ClipLoss and a dense reference,
and every loss on 2 gloo DDP ranks against one process holding the same global batch."""

import datetime
import hashlib
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from open_clip.loss import ClipLoss
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from kgclip.train.loss import LOSS_KINDS, entity_labels, make_loss, model_init_kwargs

WORLD = 2
PER_RANK = 5
DIM_IN, DIM_OUT = 6, 4


def _features(n: int, dim: int = 16, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=-1)
    texts = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=-1)
    return images, texts


def _distinct_labels(n: int, kind: str) -> torch.Tensor:
    """Labels with no repeated non-negative value: all distinct, all -1, or -1s among hashed ids."""
    if kind == "arange":
        return torch.arange(n)
    if kind == "none":
        return torch.full((n,), -1)
    return entity_labels([None if k % 3 == 0 else f"Q{k}" for k in range(n)])


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("labels_kind", ["arange", "none", "mixed"])
def test_multi_positive_equals_clip_loss_with_distinct_labels(n, labels_kind):
    images, texts = _features(n, seed=n)
    scale = torch.tensor(1 / 0.07)
    labels = _distinct_labels(n, labels_kind)
    images.requires_grad_(True)
    reference = ClipLoss()(images, texts, scale)
    (reference_grad,) = torch.autograd.grad(reference, images)
    ours = make_loss("multi_positive", rank=0, world_size=1)(images, texts, scale, labels=labels)
    (our_grad,) = torch.autograd.grad(ours, images)
    assert abs(ours.item() - reference.item()) < 1e-6
    torch.testing.assert_close(our_grad, reference_grad, rtol=0, atol=1e-6)
    assert abs(make_loss("clip", rank=0, world_size=1)(images, texts, scale).item() - reference.item()) < 1e-6


def _dense_reference(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """The multi-positive loss written out in float64: a dense 0/1 matrix from the labels, rows and
    columns normalised, each direction's log-softmax taken along its own axis of one logit matrix."""
    n = len(labels)
    mask = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i == j or (labels[i] >= 0 and labels[i] == labels[j]):
                mask[i, j] = 1.0
    logits = logits.double()
    image_to_text = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    text_to_image = logits - torch.logsumexp(logits, dim=0, keepdim=True)
    per_image = -(mask / mask.sum(dim=1, keepdim=True) * image_to_text).sum(dim=1)
    per_text = -(mask / mask.sum(dim=0, keepdim=True) * text_to_image).sum(dim=0)
    return (per_image.mean() + per_text.mean()) / 2


SHARED_IDS = ["Q1", "Q2", None, "Q1", "Q3", "Q2", "Q1", None, None, "Q4", "Q3"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_positive_with_shared_entities_matches_dense_reference(seed):
    labels = entity_labels(SHARED_IDS)
    images, texts = _features(len(SHARED_IDS), seed=seed, dtype=torch.float64)
    scale = torch.tensor(20.0, dtype=torch.float64)
    ours = make_loss("multi_positive", rank=0, world_size=1)(images, texts, scale, labels=labels)
    reference = _dense_reference(scale * images @ texts.T, labels.tolist())
    assert abs(ours.item() - reference.item()) < 1e-10
    assert abs(ours.item() - ClipLoss()(images, texts, scale).item()) > 1e-3


def test_multi_positive_on_bfloat16_features_keeps_float32_targets():
    """Under bf16 autocast the logits are bf16; targets such as 1/3 must not be rounded with them."""
    labels = entity_labels(SHARED_IDS)
    # features of halves and zeros and a power-of-two scale: every logit is exact in bf16 whichever
    # way round the products are taken, so only the targets' precision can make a difference
    g = torch.Generator().manual_seed(4)
    images, texts = (torch.randint(-1, 2, (len(SHARED_IDS), 8), generator=g) / 2 for _ in range(2))
    images, texts = images.bfloat16(), texts.bfloat16()
    scale = torch.tensor(4.0, dtype=torch.bfloat16)
    ours = make_loss("multi_positive", rank=0, world_size=1)(images, texts, scale, labels=labels)
    reference = _dense_reference(scale * images @ texts.T, labels.tolist())
    assert ours.dtype == torch.float32
    assert abs(ours.item() - reference.item()) < 1e-5


def test_entity_labels_are_stable_non_negative_and_minus_one_for_alt_texts():
    labels = entity_labels(["Q42", None, "n02119789", "Q42", ""])
    assert labels.dtype == torch.int64
    assert labels[1].item() == -1
    assert labels[0].item() == labels[3].item()
    assert len({labels[0].item(), labels[2].item(), labels[4].item()}) == 3
    assert all(v >= 0 for k, v in enumerate(labels.tolist()) if k != 1)
    # a fixed value: the same in every process and on every rank, whatever PYTHONHASHSEED says
    digest = hashlib.blake2b(b"Q42", digest_size=8).digest()
    assert labels[0].item() == int.from_bytes(digest, "big") & ((1 << 63) - 1)


def test_factory_rejects_unknown_kinds_and_bad_ranks():
    expected = r"unknown loss 'infonce': choose one of clip, siglip, multi_positive"
    with pytest.raises(ValueError, match=expected):
        make_loss("infonce", rank=0, world_size=1)
    with pytest.raises(ValueError, match="unknown loss"):
        model_init_kwargs("supcon")
    with pytest.raises(ValueError, match="rank 2 is not a rank of a world of size 2"):
        make_loss("clip", rank=2, world_size=2)


def test_multi_positive_needs_labels_of_the_batch_size():
    images, texts = _features(4)
    loss = make_loss("multi_positive", rank=0, world_size=1)
    with pytest.raises(ValueError, match="needs labels"):
        loss(images, texts, torch.tensor(10.0))
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) for 4 samples"):
        loss(images, texts, torch.tensor(10.0), labels=torch.arange(3))


def test_siglip_needs_the_models_logit_bias_which_model_init_kwargs_creates():
    import open_clip

    images, texts = _features(4)
    with pytest.raises(ValueError, match=r"model_init_kwargs\('siglip'\)"):
        make_loss("siglip", rank=0, world_size=1)(images, texts, torch.tensor(10.0))
    assert model_init_kwargs("clip") == {} and model_init_kwargs("multi_positive") == {}
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
        **model_init_kwargs("siglip"),
    )
    assert model.logit_bias.item() == -10.0
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32), torch.randint(0, 64, (4, 8)))
    loss = make_loss("siglip", rank=0, world_size=1)(*out)
    assert math.isfinite(loss.item())


class _Towers(nn.Module):
    """Two linear towers and the learnt temperature (and bias for SigLIP): a CLIP in miniature, so
    DDP's gradient averaging acts on real parameters."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.image = nn.Linear(DIM_IN, DIM_OUT)
        self.text = nn.Linear(DIM_IN, DIM_OUT)
        init = model_init_kwargs(kind)
        self.logit_scale = nn.Parameter(torch.tensor(init.get("init_logit_scale", math.log(1 / 0.07))))
        self.logit_bias = nn.Parameter(torch.tensor(init["init_logit_bias"])) if init else None

    def forward(self, x_image, x_text):
        return (
            F.normalize(self.image(x_image), dim=-1),
            F.normalize(self.text(x_text), dim=-1),
            self.logit_scale.exp(),
            self.logit_bias,
        )


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WORLD * PER_RANK pairs; entities shared within and across the ranks' halves, alt texts too."""
    g = torch.Generator().manual_seed(3)
    n = WORLD * PER_RANK
    ids = ["Q1", None, "Q2", "Q1", "Q3", "Q2", None, "Q1", "Q4", "Q3"]
    assert len(ids) == n
    x_image = torch.randn(n, DIM_IN, generator=g, dtype=torch.float64)
    x_text = torch.randn(n, DIM_IN, generator=g, dtype=torch.float64)
    return x_image, x_text, entity_labels(ids)


def _step(model: nn.Module, kind: str, rank: int, world_size: int, part: slice) -> dict:
    """One forward and backward on the pairs `part` of the global batch; the loss and gradients."""
    x_image, x_text, labels = _global_batch()
    x_image = x_image[part].clone().requires_grad_(True)
    x_text = x_text[part].clone().requires_grad_(True)
    loss = make_loss(kind, rank=rank, world_size=world_size)(*model(x_image, x_text), labels=labels[part])
    loss.backward()
    params = model.module if isinstance(model, DistributedDataParallel) else model
    return {
        "loss": loss.item(),
        "params": {name: p.grad.clone() for name, p in params.named_parameters()},
        "inputs": (x_image.grad.clone(), x_text.grad.clone()),
    }


def _towers(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return _Towers(kind).double()


def _ddp_rank(rank: int, port: int, out_dir: str) -> None:
    """A DDP rank on loopback gloo with one thread: one step per loss kind, results to a file."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = {k: _step(DistributedDataParallel(_towers(k)), k, rank, WORLD, part) for k in LOSS_KINDS}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_rank, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_ddp_two_ranks_equal_one_process_on_the_global_batch(kind, ddp_results):
    """Loss: the rank losses average to the global one. Parameters: DDP's averaged gradient is the
    global loss's gradient. Inputs (not averaged by DDP): each rank's share of the global gradient,
    times the world size, since every rank's loss sends gradient back through the gather."""
    single = _step(_towers(kind), kind, 0, 1, slice(None))
    ranks = [r[kind] for r in ddp_results]
    assert sum(r["loss"] for r in ranks) / WORLD == pytest.approx(single["loss"], abs=1e-9)
    for rank, result in enumerate(ranks):
        for name, grad in single["params"].items():
            torch.testing.assert_close(result["params"][name], grad, rtol=0, atol=1e-9, msg=name)
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        for ours, full in zip(result["inputs"], single["inputs"], strict=True):
            torch.testing.assert_close(ours, WORLD * full[part], rtol=0, atol=1e-9)
