"""Teach the CNN to see the synthetic shapes before it learns to caption: a synthetic stand-in for ImageNet weights.

    python pretrain_encoder.py --data-dir data/synthetic --epochs 10 --save /tmp/synthetic_resnet18.pth
    python train.py --config configs/synthetic.json --pretrain-epochs 0 --pretrained yes \\
        --weights /tmp/synthetic_resnet18.pth

The synthetic recipe does this itself (`pretrain_epochs` in configs/synthetic.json): before its first epoch,
train.py pretrains the CNN this way, writes it to `encoder_pretrained.pth` in the run folder and trains the
captioner on it, frozen, exactly as a COCO run uses ImageNet weights.

A ResNet from scratch (residual branches zero-initialised) learns from the synthetic annotations' object lists which
colours, shapes and colour-shape pairs are in each image, and its background (multi-label, binary cross-entropy), on
images preprocessed once into memory (3000 images of 96 px take 330 MB), with Adam in batches of 16 at 4e-3, the
rate held until the last fifth of the steps and then lowered to 0 (learning_rate). Twice the steps of 32 at 2e-3,
each half the size, teach more in epochs that took 1.0-1.35 times as long here (pair precision 0.63 against 0.45 on
the hard set after 10 epochs of a cosine schedule, 0.96 against 0.88 on the easy set), and a rate held longer than a
cosine holds it teaches shapes sooner (0.75 against 0.58 after 9 epochs, docs/EXPERIMENTS.md). No augmentation:
flips and transposes, which change no label here, slowed learning more than they helped within 10 epochs (pair
precision 0.81 against 0.88, docs/EXPERIMENTS.md). The pairs make it bind each colour to its shape, which neither
the captions' bag of words nor the colour and shape labels alone ask for: the captioner trained from scratch named a
purple diamond and a teal star "a teal diamond and a purple star" (docs/EXPERIMENTS.md). The background is a label
too: a CNN pretrained on the objects alone learned to ignore it, and its captioner named the background right one
time in seven. And it learns where each object is: a second head, a 1x1 convolution on layer3's map (6 x 6 cells at
96 px), tells for each cell which colour-shape pair covers it (cross-entropy against the share of the cell each pair
covers, the objects redrawn from their boxes). On textured backgrounds (the hard set) the labels alone taught
colours and backgrounds but left shapes at chance after 10 epochs; with the map, the top shape of one-object images
was right 53% of the time after 10 epochs in batches of 32 at 2e-3, 85% in batches of 16 at 4e-3
(docs/EXPERIMENTS.md). After each epoch it reports on the val split: the top background, the top colour and the top
shape of one-object images, and pair precision (of an image's k top-scoring pairs, k its number of distinct pairs,
the share that are in it).

With --centres (the recipe's object_features) a third head, a 1x1 convolution on layer3's map like the second,
names for each cell the pair whose object has its centre there (0: none), which tells two touching objects of one
pair apart; it is saved beside the ResNet in the weights file ("centres.*"), and the captioner reads it
(model.EncoderCNN).

Also a diagnostic: how fast does a CNN of a given size learn to see these shapes (`--image-size 64` vs 96)?
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw

import synthetic_data
import synthetic_hard
from annotations import annotation_path, image_path, load_coco
from data_loader import Preprocess, load_image
from files import atomic_write
from model import OBJECT_HEAD, layer3_side, zero_init_residual
from runtime import autocast, autocast_dtype, resolve_device

DECAY_SHARE = 0.2  # the learning rate's last share of the steps, down to 0 (learning_rate)


class Labels:
    """The label set of a synthetic split: its backgrounds, its colours, its shapes, and every colour-shape pair."""

    def __init__(self, images: list[dict]) -> None:
        objects = [obj for image in images for obj in image["objects"]]
        self.backgrounds = sorted({f"{image['background']} background" for image in images if "background" in image})
        self.colours = sorted({obj["colour"] for obj in objects})
        self.shapes = sorted({obj["shape"] for obj in objects})
        self.names = (self.backgrounds + self.colours + self.shapes
                      + [f"{c} {s}" for c in self.colours for s in self.shapes])
        self.index = {name: position for position, name in enumerate(self.names)}

    def span(self, kind: str) -> slice:
        """Where one kind of label sits: backgrounds, colours, shapes or pairs."""
        sizes = {"backgrounds": len(self.backgrounds), "colours": len(self.colours), "shapes": len(self.shapes),
                 "pairs": len(self.colours) * len(self.shapes)}
        start = 0
        for name, size in sizes.items():
            if name == kind:
                return slice(start, start + size)
            start += size
        raise KeyError(kind)

    def pair(self, obj: dict) -> int:
        """Which pair an object is, counted from 1 (0 if the train split has no such pair): its class in the maps."""
        position = self.index.get(f"{obj['colour']} {obj['shape']}")
        return 0 if position is None else position - self.span("pairs").start + 1

    def of(self, image: dict) -> torch.Tensor:
        """(labels,) 0/1 targets of one image; a background, colour or shape the train split lacks adds nothing."""
        target = torch.zeros(len(self.names))
        names = [f"{image['background']} background"] if "background" in image else []
        for obj in image["objects"]:
            names += [obj["colour"], obj["shape"], f"{obj['colour']} {obj['shape']}"]
        for name in names:
            if name in self.index:
                target[self.index[name]] = 1.0
        return target


def split_images(data_dir: Path, split: str, max_images: int = 0) -> list[dict]:
    """The image entries of a synthetic split, with their object lists (ValueError for data without them)."""
    images = load_coco(annotation_path(data_dir, split)).dataset["images"][:max_images or None]
    if not images or "objects" not in images[0]:
        raise ValueError(f"{annotation_path(data_dir, split)} has no object lists: pretraining the CNN needs the "
                         f"synthetic set (prepare_data.py synthetic)")
    return images


def load_split(data_dir: Path, split: str, images: list[dict], labels: Labels, image_size: int,
               resize_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preprocessed images (N, 3, S, S) as the captioner will see them, their targets (N, labels) and object counts."""
    transform = Preprocess(image_size, resize_size or image_size)
    pixels = [transform(load_image(image_path(data_dir, split, image["file_name"]), transform.resize_size))
              for image in images]
    targets = torch.stack([labels.of(image) for image in images])
    counts = torch.tensor([len(image["objects"]) for image in images])
    return torch.stack(pixels).contiguous(memory_format=torch.channels_last), targets, counts


def crop_geometry(image: dict, image_size: int, resize_size: int) -> tuple[float, float, float]:
    """How Preprocess maps the image's pixels to the CNN's: (scale, left, top), a point (x, y) landing at
    (x * scale - left, y * scale - top) of the S x S centre crop."""
    scale = resize_size / min(image["width"], image["height"])
    left, top = ((side * scale - image_size) / 2 for side in (image["width"], image["height"]))
    return scale, left, top


def object_map(image: dict, labels: Labels, image_size: int, resize_size: int = 0) -> torch.Tensor:
    """(S, S) which pair covers each pixel of the image as the CNN sees it (resized, centre crop of S), counted from 1
    (Labels.pair), 0 where no object is: the objects redrawn from their boxes as the generator drew them."""
    scale, left, top = crop_geometry(image, image_size, resize_size or image_size)
    canvas = Image.new("I", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    for obj in image["objects"]:  # in the order drawn: a later object covers an earlier one
        x, y, w, h = obj["bbox"]
        box = (x * scale - left, y * scale - top, w * scale, h * scale)
        synthetic_data.draw_shape(draw, obj["shape"], box, synthetic_hard.outline_of, fill=labels.pair(obj))
    return torch.from_numpy(np.asarray(canvas, dtype=np.int64))


def cell_targets(images: list[dict], labels: Labels, image_size: int, resize_size: int, grid: int) -> torch.Tensor:
    """(N, pairs + 1, grid, grid): the share of each cell of a grid x grid partition of the image that each pair
    covers (class 0: no object), the targets of the pretraining's map head."""
    classes = len(labels.colours) * len(labels.shapes) + 1
    targets = [F.adaptive_avg_pool2d(F.one_hot(object_map(image, labels, image_size, resize_size), classes)
                                     .permute(2, 0, 1).float(), grid) for image in images]
    return torch.stack(targets)


def centre_targets(images: list[dict], labels: Labels, image_size: int, resize_size: int, grid: int
                   ) -> torch.Tensor:
    """(N, grid, grid): which pair (Labels.pair) has an object's centre in each cell, 0 where none has; the targets
    of the centre head, which asks the CNN to tell objects of one pair apart, as counting needs."""
    targets = torch.zeros(len(images), grid, grid, dtype=torch.long)
    for row, image in enumerate(images):
        scale, left, top = crop_geometry(image, image_size, resize_size or image_size)
        for obj in image["objects"]:
            x, y, w, h = obj["bbox"]
            across, down = (x + w / 2) * scale - left, (y + h / 2) * scale - top  # in the crop's pixels
            if 0 <= across < image_size and 0 <= down < image_size:  # centres outside the crop name no cell
                targets[row, int(down * grid / image_size), int(across * grid / image_size)] = labels.pair(obj)
    return targets


class Pretrainer(torch.nn.Module):
    """A torchvision ResNet with its heads: its classifier (fc), which names the labels from the pooled features;
    a 1x1 convolution on layer3's map that tells, cell by cell, which colour-shape pair is there; and optionally
    another that tells in which cell each object's centre lies."""

    def __init__(self, net: torch.nn.Module, pairs: int, centres: bool = False) -> None:
        super().__init__()
        self.net = net
        self.cells = torch.nn.Conv2d(net.layer4[0].conv1.in_channels, pairs + 1, kernel_size=1)
        self.centres = torch.nn.Conv2d(net.layer4[0].conv1.in_channels, pairs + 1, kernel_size=1) if centres \
            else None

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(label logits (N, labels), cell logits (N, pairs + 1, H/16, W/16), centre logits of the same shape or
        None)."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        x = net.layer3(net.layer2(net.layer1(x)))
        label_logits = net.fc(torch.flatten(net.avgpool(net.layer4(x)), 1))
        return label_logits, self.cells(x), None if self.centres is None else self.centres(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(images)[0]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor,
             labels: Labels, device: torch.device = torch.device("cpu"), precision: str = "fp32"
             ) -> dict[str, float]:
    """Top background right; top colour and top shape right on one-object images; pair precision at k."""
    model.eval()
    with autocast(device, precision):
        logits = torch.cat([model(chunk.to(device)).float().cpu() for chunk in images.split(100)])
    one = counts == 1

    def top_right(kind: str, rows: torch.Tensor) -> float:
        span = labels.span(kind)
        if span.stop == span.start or not rows.any():
            return float("nan")
        return (logits[rows, span].argmax(1) == targets[rows, span].argmax(1)).float().mean().item()

    wanted = targets[:, labels.span("pairs")] > 0.5
    k = wanted.sum(1)
    ranked = logits[:, labels.span("pairs")].argsort(1, descending=True)
    hits = sum(wanted[row, ranked[row, :k[row]]].sum().item() for row in range(len(targets)))
    return {"background": top_right("backgrounds", torch.ones_like(one)), "colour": top_right("colours", one),
            "shape": top_right("shapes", one), "pairs": hits / max(k.sum().item(), 1)}


def build(backbone: str, labels: int, pairs: int, lr: float, device: torch.device, precision: str,
          centres: bool = False) -> tuple[Pretrainer, torch.optim.Optimizer, torch.amp.GradScaler]:
    """A ResNet from scratch with a classifier of `labels` outputs and a map head of `pairs` + 1 classes (and, with
    centres, a centre head like it), its Adam, and a gradient scaler (used for fp16)."""
    net = torchvision.models.get_model(backbone, weights=None, num_classes=labels)
    zero_init_residual(net)
    model = Pretrainer(net, pairs, centres).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device, precision) is torch.float16)
    return model, optimizer, scaler


def learning_rate(lr: float, step: int, total: int, decay: float = DECAY_SHARE) -> float:
    """The rate for step `step` (from 0) of `total`: lr, then down to 0 in a straight line over the last `decay` share
    of the steps (a warmup-stable-decay schedule without the warmup; Hägele et al. 2024).

    On the hard set, 9 epochs of it named the pairs at 0.75 (val), against 0.58 for 9 epochs of a cosine from lr to
    0, whose rate was half gone when shapes began to be learned (docs/EXPERIMENTS.md).
    """
    return lr * min(1.0, (total - step) / (decay * total))


def train_step(model: Pretrainer, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, targets: torch.Tensor, cells: torch.Tensor, device: torch.device,
               precision: str, centres: torch.Tensor | None = None) -> float:
    """One optimisation step on a batch of images (batch, 3, S, S), their 0/1 label targets and their cell targets
    (cell_targets), and centre targets (centre_targets) for a model with a centre head; returns the loss: binary
    cross-entropy of the labels plus cross-entropy of the cells (plus that of the centres). An update from a loss
    that is not finite is not applied: the caller stops."""
    with autocast(device, precision):
        logits, cell_logits, centre_logits = model.heads(images.to(device, non_blocking=True))
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.to(device))
    cells = cells.to(device)
    loss = loss - (cells * F.log_softmax(cell_logits.float(), dim=1)).sum(1).mean()
    if centre_logits is not None:
        loss = loss + F.cross_entropy(centre_logits.float(), centres.to(device))
    if not torch.isfinite(loss):
        return loss.item()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def pretrain(data_dir: str | Path, image_size: int = 96, epochs: int = 10, backbone: str = "resnet18",
             lr: float = 4e-3, batch_size: int = 16, resize_size: int = 0, max_images: int = 0, seed: int = 0,
             device: str = "auto", precision: str = "auto", centres: bool = False,
             say=lambda line: print(line, flush=True)) -> tuple[Pretrainer, list[dict[str, float]]]:
    """Train a ResNet from scratch on the split's labels and object maps; returns it (net: the ResNet, with its label
    classifier as fc) and one report per epoch. precision as for training (runtime.py: bf16 autocast only on CPUs
    that compute bf16 natively). centres adds the centre head (centre_targets), which the captioner reads with
    object_features."""
    data_dir = Path(data_dir)
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_images = split_images(data_dir, "train", max_images)
    labels = Labels(train_images)
    started = time.time()
    train_x, train_y, _ = load_split(data_dir, "train", train_images, labels, image_size, resize_size)
    val_x, val_y, val_counts = load_split(data_dir, "val", split_images(data_dir, "val", max_images), labels,
                                          image_size, resize_size)
    grid = layer3_side(image_size)
    train_cells = cell_targets(train_images, labels, image_size, resize_size, grid)
    train_centres = centre_targets(train_images, labels, image_size, resize_size, grid) if centres else None
    model, optimizer, scaler = build(backbone, len(labels.names), train_cells.size(1) - 1, lr, device, precision,
                                     centres)
    steps_per_epoch = len(train_x) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the train split has {len(train_x)} images, fewer than one batch ({batch_size})")
    reports, step, total = [], 0, epochs * steps_per_epoch
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(lr, step, total)
            index = order[start:start + batch_size]
            loss = train_step(model, optimizer, scaler, train_x[index], train_y[index], train_cells[index], device,
                              precision, None if train_centres is None else train_centres[index])
            if not math.isfinite(loss):
                raise FloatingPointError(f"pretraining loss is {loss} at epoch {epoch + 1}: lower --lr")
            step += 1
        report = {"epoch": epoch + 1, **accuracy(model, val_x, val_y, val_counts, labels, device, precision),
                  "seconds": round(time.time() - started, 1)}
        say(f"pretraining the CNN, epoch {report['epoch']}/{epochs}: val background {report['background']:.2f}, "
            f"colour {report['colour']:.2f}, shape {report['shape']:.2f}, pairs {report['pairs']:.2f} "
            f"({report['seconds']:.0f} s)")
        reports.append(report)
    return model, reports


def save_backbone(model: Pretrainer, path: str | Path) -> Path:
    """Write the ResNet without its classifier as a torchvision state dict (what `--weights FILE` loads), and beside
    it the centre head if there is one (keys "centres.*", which the captioner reads with object_features)."""
    state = {name: tensor.cpu() for name, tensor in model.net.state_dict().items() if not name.startswith("fc.")}
    if model.centres is not None:
        state.update({OBJECT_HEAD + name: tensor.cpu() for name, tensor in model.centres.state_dict().items()})
    with atomic_write(Path(path)) as temporary:
        torch.save(state, temporary)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-images", type=int, default=0, help="use at most this many images per split")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--centres", action="store_true",
                        help="also learn in which layer3 cell each object's centre lies (a head saved with the "
                             "CNN, which the captioner reads with --object-features true)")
    parser.add_argument("--save", help="write the trained backbone here (refuses to replace an existing file)")
    args = parser.parse_args(argv)
    if args.save and Path(args.save).exists():
        print(f"error: {args.save} exists: give another --save path", file=sys.stderr)
        return 2
    try:
        model, _ = pretrain(args.data_dir, args.image_size, args.epochs, args.backbone, args.lr, args.batch_size,
                            max_images=args.max_images, device=args.device, precision=args.precision,
                            centres=args.centres)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.save:
        print(f"wrote {save_backbone(model, args.save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
