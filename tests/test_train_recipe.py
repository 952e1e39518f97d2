"""The training recipe piece by piece: the released defaults, the crop the config asks for, the
schedule, the no-decay rule, the epoch length from sizes.json, model JSONs and cached pretrained
tags (torch; runs serially, no training)."""

import io
import itertools
import json
import tarfile

import pytest
from PIL import Image
from torchvision import transforms

from kgclip.config import ConfigError, parse
from kgclip.train.data import count_samples, train_transform
from kgclip.train.errors import ModelError
from kgclip.train.loop import learning_rate, param_groups, plan
from kgclip.train.models import BUNDLED, _pretrained, build

BASE = {"name": "x", "search": {"corpus": {"source": "/x"}}}


def _train(**settings):
    return parse({**BASE, "train": settings}).train


def test_defaults_are_the_released_recipe_and_the_section_is_strict():
    cfg = _train()
    assert (cfg.lr, tuple(cfg.betas), cfg.eps, cfg.weight_decay, cfg.warmup_epochs) == (
        5e-4,
        (0.9, 0.98),
        1e-8,
        0.2,
        2.0,
    )
    assert tuple(cfg.crop_scale) == (0.4, 1.0) and tuple(cfg.crop_ratio) == (0.9, 1.111)
    assert (cfg.model, cfg.loss, cfg.precision, cfg.accum_steps, cfg.pretrained) == (
        "kgclip-tiny",
        "clip",
        "fp32",
        1,
        None,
    )
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        _train(learning_rate=1e-3)
    with pytest.raises(ConfigError, match=r"train\.precision: "):
        _train(precision="fp8")


def test_the_crop_is_the_configured_one():
    mean = std = (0.5, 0.5, 0.5)
    crop = train_transform(64, mean, std, _train()).transforms[0]
    assert isinstance(crop, transforms.RandomResizedCrop)
    assert (crop.size, crop.scale, crop.ratio) == ((64, 64), (0.4, 1.0), (0.9, 1.111))
    assert crop.interpolation == transforms.InterpolationMode.BICUBIC
    other = train_transform(32, mean, std, _train(crop_scale=[0.6, 0.9], crop_ratio=[0.8, 1.25]))
    assert (other.transforms[0].size, other.transforms[0].scale, other.transforms[0].ratio) == (
        (32, 32),
        (0.6, 0.9),
        (0.8, 1.25),
    )
    assert other(Image.new("RGB", (90, 70), (10, 200, 30))).shape == (3, 32, 32)


def test_linear_warm_up_then_cosine_decay_to_zero():
    cfg = _train(lr=1e-3, warmup_epochs=2, epochs=10, batch_size=4, accum_steps=2)
    p = plan(cfg, samples=80, world=2)  # global batch 4 x 2 x 2 = 16: 5 steps per epoch
    assert (p.global_batch, p.steps_per_epoch, p.total_steps, p.warmup_steps) == (16, 5, 50, 10)
    lrs = [learning_rate(cfg, p, s) for s in range(p.total_steps + 1)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1e-3)  # the peak right after warm-up
    assert lrs[30] == pytest.approx(5e-4)  # half-way through the cosine
    assert lrs[50] == pytest.approx(0.0, abs=1e-15)
    assert all(a > b for a, b in itertools.pairwise(lrs[10:]))  # strictly falling after the peak
    assert plan(_train(max_steps=7, warmup_epochs=3), samples=80, world=1).total_steps == 7  # max_steps wins


def test_no_weight_decay_on_gains_biases_norms_and_the_temperature():
    model = build(_train()).model
    names = {id(p): n for n, p in model.named_parameters()}
    exempt_group, decay_group = param_groups(model, 0.2)
    assert (exempt_group["weight_decay"], decay_group["weight_decay"]) == (0.0, 0.2)
    exempt = {names[id(p)] for p in exempt_group["params"]}
    decayed = {names[id(p)] for p in decay_group["params"]}
    assert exempt | decayed == set(names.values()) and not exempt & decayed
    assert "logit_scale" in exempt and "token_embedding.weight" in decayed
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in decayed
    assert all(model.get_parameter(n).ndim >= 2 for n in decayed)
    assert not [n for n in decayed if "bias" in n or ".ln_" in n or n.startswith("ln_")]
    bias = "visual.transformer.resblocks.0.attn.in_proj_bias"
    assert {"visual.ln_post.weight", "ln_final.bias", bias} <= exempt


def _tar(path, keys, ext="jpg"):
    with tarfile.open(path, "w") as tar:
        for key in keys:
            image = io.BytesIO()
            Image.new("RGB", (8, 8)).save(image, "JPEG")
            for member, data in ((f"{key}.{ext}", image.getvalue()), (f"{key}.txt", b"a caption")):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_an_epoch_is_sizes_json_when_it_names_every_shard_else_the_tar_headers(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    _tar(a, ["k1", "k2", "k3"])
    _tar(b, ["k4", "k5"], ext="png")
    shards = [str(a), str(b)]
    assert count_samples(shards) == 5  # no sizes.json: image members counted
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 300, "b.tar": 200}))
    assert count_samples(shards) == 500  # sizes.json read, the tars not opened
    assert plan(_train(batch_size=50), 500, world=1).steps_per_epoch == 10
    (tmp_path / "sizes.json").write_text(json.dumps({"a.tar": 300}))
    assert count_samples(shards) == 5  # it does not name b.tar: the headers again


def test_a_local_model_json_is_built_under_its_file_name(tmp_path):
    cfg = json.loads((BUNDLED / "kgclip-tiny.json").read_text())
    cfg["embed_dim"] = 48
    path = tmp_path / "my-clip.json"
    path.write_text(json.dumps(cfg))
    built = build(_train(model=str(path)))
    assert built.name == "my-clip" and built.model.text_projection.shape[1] == 48
    assert built.model_cfg["embed_dim"] == 48
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ModelError, match="not a readable JSON file"):
        build(_train(model=str(tmp_path / "broken.json")))
    (tmp_path / "partial.json").write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ModelError, match="needs embed_dim, vision_cfg and text_cfg"):
        build(_train(model=str(tmp_path / "partial.json")))
    with pytest.raises(ModelError, match="no such file"):
        build(_train(model=str(tmp_path / "missing.json")))


def test_a_pretrained_tag_resolves_to_its_cached_weights_and_never_downloads(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="not in the local cache and kgclip never downloads them"):
        _pretrained("ViT-B-32", "laion2b_s34b_b79k")
    # the layout open_clip's own hf_hub download leaves: refs/main names the snapshot
    repo = tmp_path / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"cached weights")
    assert _pretrained("ViT-B-32", "laion2b_s34b_b79k") == str(snapshot / "open_clip_pytorch_model.bin")
    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert _pretrained("ViT-B-32", str(local)) == str(local)  # a file is used as it is
    assert _pretrained("ViT-B-32", None) is None
