"""Evaluation fixtures: a synthetic coloured-shapes set as a CLIP_benchmark wds folder and tiny checkpoints.

The shapes vary in size, position, background and noise, so a tiny model's scores are spread, not
tied, and the classes are not separable by one pixel statistic.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet, Item, fingerprint_of
from kgclip.eval.wds import write_wds

COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 170, 60), "yellow": (220, 200, 40)}
SHAPES = ("circle", "square")
CLASSES = [f"{c} {s}" for c in COLOURS for s in SHAPES]  # 8 classes
TEMPLATES = ("a photo of a {c}.", "a drawing of a {c}.", "{c}")


def shape_png(label: int, seed: int, size: int = 72) -> bytes:
    rnd = random.Random(seed)
    colour, shape = CLASSES[label].split()
    bg = tuple(rnd.randint(90, 250) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(im)
    r = rnd.randint(size // 6, size // 3)
    x, y = rnd.randint(r, size - r), rnd.randint(r, size - r)
    fill = tuple(min(255, max(0, v + rnd.randint(-30, 30))) for v in COLOURS[colour])
    box = (x - r, y - r, x + r, y + r)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=fill)
    for _ in range(40):  # speckles
        px, py = rnd.randrange(size), rnd.randrange(size)
        draw.point((px, py), fill=tuple(rnd.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def shapes_set(per_class: int = 5, name: str = "shapes") -> EvalSet:
    rows = [(label, label * 1000 + i) for i in range(per_class) for label in range(len(CLASSES))]

    def items():
        for label, seed in rows:
            data = shape_png(label, seed)
            yield Item(f"{label}-{seed}", lambda data=data: data, label=label)

    return EvalSet(
        name=name,
        task=CLASSIFICATION,
        classes=[ClassInfo(c) for c in CLASSES],
        items=items,
        fingerprint=fingerprint_of("shapes", per_class),
        source="shapes",
        templates=TEMPLATES,
    )


def write_shapes(out: Path, per_class: int = 5) -> Path:
    write_wds(shapes_set(per_class, out.name), out)
    return out


def add_corrupt(folder: Path, count: int) -> None:
    """Append `count` samples whose image bytes are not an image to the folder's last shard."""
    nshards = int((folder / "test" / "nshards.txt").read_text())
    shard = folder / "test" / f"{nshards - 1}.tar"
    with tarfile.open(shard, "a") as tar:
        for i in range(count):
            for ext, data in (("png", b"\x89PNG\r\n\x1a\n truncated"), ("cls", b"0")):
                info = tarfile.TarInfo(f"bad{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def tiny_checkpoint(path: Path, model: str = "kgclip-tiny", seed: int = 0) -> Path:
    """A random-init bundled tiny model's state dict, saved as open_clip saves final weights."""
    import open_clip
    import torch

    from kgclip.train.models import register

    torch.manual_seed(seed)
    net = open_clip.create_model(register(model))
    torch.save(net.state_dict(), path)
    return path


def trained_tiny(folder: Path, steps: int = 60, seed: int = 0) -> Path:
    """kgclip-tiny trained for `steps` steps on other shapes images than the eval set's, saved as an
    open_clip `local-dir:` folder (open_clip_config.json + open_clip_pytorch_model.bin), so stock
    open_clip and CLIP_benchmark load it as it is. Trained, its scores are spread and mostly right."""
    import json

    import open_clip
    import torch

    from kgclip.train.models import BUNDLED, register

    torch.manual_seed(seed)
    name = register("kgclip-tiny")
    model, _, transform = open_clip.create_model_and_transforms(name, output_dict=True)
    tokenizer = open_clip.get_tokenizer(name)
    rows = [(label, 500_000 + label * 100 + i) for label in range(len(CLASSES)) for i in range(16)]
    pictures = [Image.open(io.BytesIO(shape_png(lb, s))).convert("RGB") for lb, s in rows]
    images = torch.stack([transform(p) for p in pictures])
    texts = tokenizer([f"a photo of a {CLASSES[lb]}." for lb, _ in rows])
    loss_fn = open_clip.loss.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randperm(len(rows))[:32]
        out = model(images[pick], texts[pick])
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads((BUNDLED / "kgclip-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
