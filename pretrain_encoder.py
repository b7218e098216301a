"""How fast does the CNN learn to see the synthetic shapes? Trains the ResNet alone to name colours and shapes.

    python probe_encoder.py --image-size 64 --epochs 6
    python probe_encoder.py --image-size 96 --epochs 4
    python probe_encoder.py --image-size 64 --epochs 3 --torchvision-init   # without zero-initialised residuals

A diagnostic for choosing the synthetic recipe, not part of training. Captions mix what the CNN sees with how the
LSTM words it; this takes the words out: a randomly initialised ResNet (the recipe's encoder, residual branches
zero-initialised unless --torchvision-init) learns a multi-label "which of the ten colours and six shapes are in the
image" from the synthetic annotations' object lists, with Adam and bf16 autocast where the CPU supports it, on
images preprocessed once into memory. After each epoch it prints, on the val split, how often the top colour and the
top shape of a one-object image are right, and the share of images whose whole label set is exactly right.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from annotations import annotation_path, image_path, load_coco
from data_loader import Preprocess, load_image
from model import EncoderCNN

from synthetic_data import COLOURS, SHAPES

LABELS = list(COLOURS) + list(SHAPES)


def load_split(data_dir: Path, split: str, image_size: int, max_images: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preprocessed images (N, 3, S, S), their labels (N, 16) and object counts (N,) of a synthetic split."""
    images = load_coco(annotation_path(data_dir, split)).dataset["images"][:max_images or None]
    if not images or "objects" not in images[0]:
        raise ValueError(f"{annotation_path(data_dir, split)} has no object lists: the probe needs the synthetic set")
    transform = Preprocess(image_size, image_size)
    pixels, labels = [], torch.zeros(len(images), len(LABELS))
    for row, image in enumerate(images):
        pixels.append(transform(load_image(image_path(data_dir, split, image["file_name"]), transform.resize_size)))
        for obj in image["objects"]:
            labels[row, LABELS.index(obj["colour"])] = labels[row, LABELS.index(obj["shape"])] = 1.0
    counts = torch.tensor([len(image["objects"]) for image in images])
    return torch.stack(pixels), labels, counts


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
             device: torch.device) -> dict[str, float]:
    """Top colour and top shape accuracy on one-object images; exact label sets on all of them."""
    model.eval()
    logits = torch.cat([model(chunk.to(device), "auto").float().cpu() for chunk in images.split(100)])
    one = counts == 1
    colours = len(COLOURS)
    return {"colour": (logits[one, :colours].argmax(1) == labels[one, :colours].argmax(1)).float().mean().item(),
            "shape": (logits[one, colours:].argmax(1) == labels[one, colours:].argmax(1)).float().mean().item(),
            "exact": ((logits > 0) == (labels > 0.5)).all(1).float().mean().item()}


def probe(data_dir: Path, image_size: int, epochs: int, backbone: str = "resnet50", lr: float = 1e-3,
          batch_size: int = 32, zero_init: bool = True, max_images: int = 0, seed: int = 0) -> list[dict[str, float]]:
    """Train and report after every epoch; returns the per-epoch reports."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    train_x, train_y, _ = load_split(data_dir, "train", image_size, max_images)
    val_x, val_y, val_counts = load_split(data_dir, "val", image_size, max_images)
    # A backbone built frozen keeps torchvision's initialisation; unfrozen afterwards, it trains from there.
    encoder = EncoderCNN(len(LABELS), backbone, pretrained="no", train_backbone="yes" if zero_init else "no")
    encoder.set_backbone_trainable(True)
    model = encoder.to(device, memory_format=torch.channels_last)  # its projection is the 16-label classifier
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    reports, started = [], time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            logits = model(train_x[index].to(device), "auto")
            loss = F.binary_cross_entropy_with_logits(logits.float(), train_y[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        report = {"epoch": epoch + 1, **accuracy(model, val_x, val_y, val_counts, device),
                  "seconds": round(time.time() - started, 1)}
        print(f"{image_size} px, epoch {report['epoch']}: colour {report['colour']:.2f}, shape {report['shape']:.2f}, "
              f"exact {report['exact']:.2f} ({report['seconds']:.0f} s)", flush=True)
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-images", type=int, default=0, help="use at most this many images per split")
    parser.add_argument("--torchvision-init", action="store_true", help="no zero-initialised residual branches")
    args = parser.parse_args(argv)
    try:
        probe(Path(args.data_dir), args.image_size, args.epochs, args.backbone, args.lr, args.batch_size,
              zero_init=not args.torchvision_init, max_images=args.max_images)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
