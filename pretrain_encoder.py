"""Pretrain a CNN on a set's object annotations (captioning/pretraining.py) and save it as a weights file.

    python pretrain_encoder.py --data-dir data/synthetic --centres --save /tmp/synthetic_resnet18.pth
    python train.py --config configs/synthetic.json --pretrain-epochs 0 --pretrained yes \\
        --weights /tmp/synthetic_resnet18.pth

The synthetic recipe does this itself (`pretrain_epochs` in configs/synthetic.json): before its first epoch, train.py
pretrains the CNN this way, writes it to `encoder_pretrained.pth` in the run folder and trains the captioner on it,
frozen, as a COCO run uses ImageNet weights. Its defaults are the recipe's (--config), so the two pretrain alike.
Also a diagnostic: how fast a CNN of a given size learns to see a set.
"""
from __future__ import annotations

from captioning.interrupts import quiet_interrupts

if __name__ == "__main__":  # before torch loads, which takes seconds: a Ctrl-C then ends the command quietly
    quiet_interrupts()

import argparse
import os
import sys
from pathlib import Path

from captioning.config import CHOICES, at_least, make_config, setting_flag
from captioning.pretraining import pretrain, save_backbone

RECIPE = Path(__file__).resolve().parent / "configs" / "synthetic.json"


def positive_rate(text: str) -> float:
    """An argparse type: a learning rate, a finite number above 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(RECIPE),
                        help="the recipe whose pretraining settings are the defaults (default: the synthetic one)")
    parser.add_argument("--data-dir", help="the set (default: the recipe's data_dir)")
    parser.add_argument("--image-size", type=setting_flag("image_size"), help="default: the recipe's image_size")
    parser.add_argument("--epochs", type=at_least(1), help="default: the recipe's pretrain_epochs")
    parser.add_argument("--backbone", choices=CHOICES["backbone"], help="default: the recipe's backbone")
    parser.add_argument("--lr", type=positive_rate, help="default: the recipe's pretrain_lr")
    parser.add_argument("--batch-size", type=at_least(1), help="default: the recipe's pretrain_batch_size")
    parser.add_argument("--max-images", type=at_least(0), default=0, help="use at most this many images per split")
    parser.add_argument("--device", default="auto", choices=CHOICES["device"])
    parser.add_argument("--precision", default="auto", choices=CHOICES["precision"])
    parser.add_argument("--centres", action="store_true",
                        help="also learn in which layer3 cell each object's centre lies (a head saved with the "
                             "CNN, which the captioner reads with --object-features true)")
    parser.add_argument("--save", help="write the trained backbone here (refuses to replace an existing file)")
    args = parser.parse_args(argv)
    try:
        recipe = make_config(args.config, check=False)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    save = Path(args.save) if args.save else None
    if save and (save.exists() or save.is_symlink()):
        print(f"error: {save} exists: give another --save path", file=sys.stderr)
        return 2
    if save and not os.access(save.parent if str(save.parent) else ".", os.W_OK):
        print(f"error: cannot write {save}: its folder {save.parent} is missing or not writable", file=sys.stderr)
        return 2
    epochs = args.epochs or recipe.pretrain_epochs
    if not epochs:
        parser.error(f"{args.config} does not pretrain (pretrain_epochs 0): give --epochs")
    try:
        model, _ = pretrain(args.data_dir or recipe.data_dir, args.image_size or recipe.image_size, epochs,
                            args.backbone or recipe.backbone, args.lr or recipe.pretrain_lr,
                            args.batch_size or recipe.pretrain_batch_size, recipe.resize_size,
                            max_images=args.max_images, device=args.device, precision=args.precision,
                            centres=args.centres, fit=recipe.image_fit,
                            small_epochs=0 if args.image_size else int(epochs * recipe.pretrain_small_share + 1e-9),
                            small_size=recipe.pretrain_small_size)
    except KeyboardInterrupt:
        print("interrupted: nothing was saved", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"error: {error}: lower --lr; nothing was saved", file=sys.stderr)
        return 1
    if save:
        print(f"wrote {save_backbone(model, save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
