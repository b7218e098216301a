"""The built-in synthetic COCO-format sets: coloured shapes with five true captions per image.

    python prepare_data.py synthetic --out data/synthetic [--variety hard]

Two varieties, each a producer of COCO's files like any other: "easy" (easy.py, the default: flat shapes on flat
backgrounds) and "hard" (hard.py: textured backgrounds, camouflaged objects, counts, relations, varied image sizes).
What both share (palette, shapes, wording, the writer of the files) is common.py; neither imports the other.

It writes what COCO has, in COCO's formats, under DIR/annotations/: per split, captions_<split>.json (the captions),
instances_<split>.json (each object's category "<colour> <shape>", box and visible pixels as RLE) and
stuff_<split>.json (the background's category and pixels, as COCO-Stuff does), and synonyms.txt (the words the
captions name each category with, in coco_synonyms.txt's format); the images go to DIR/images/<split>/.
The engine (captioning/) reads those files and never imports this package.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from prepare.synthetic import easy, hard
from prepare.synthetic.common import (MAX_IMAGES_PER_SPLIT, MAX_SIDE, MIN_SIDE, SPLITS, Variety,  # noqa: F401
                                      plural_of, write_set)

VARIETIES = ("easy", "hard")


def shape_words() -> dict[str, str]:
    """Every word the captions use to name a shape, singular and plural, -> the shape it names ("disks" -> circle)."""
    return caption_vocabulary()["shapes"]


def caption_vocabulary() -> dict[str, dict[str, str]]:
    """The words captions of either variety name objects with: {"colours": word -> colour, "shapes": noun or plural
    -> shape, "sizes": word -> size}, so that a parser of captions reads them with the generator's own words."""
    shapes = {}
    for table in (easy.SHAPE_NOUNS, hard.SHAPE_NOUNS):
        for shape, nouns in table.items():
            for noun in nouns:
                shapes[noun] = shapes[plural_of(noun)] = shape
    sizes = {word: size for size, words in easy.SIZE_WORDS.items() for word in words}
    return {"colours": {colour: colour for colour in easy.COLOURS}, "shapes": shapes, "sizes": sizes}


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}.")


def _variety(variety: str) -> Variety:
    """The drawing, captioning and names of a variety of the set."""
    if variety == "easy":
        return Variety("easy", easy.sample_scene, easy.draw_scene, easy.label_scene, easy.caption_scene,
                       easy.GENERATOR_VERSION,
                       "Synthetic coloured shapes with five true captions per image", easy.SHAPES,
                       tuple(easy.BACKGROUNDS),
                       easy.SHAPE_NOUNS)
    if variety != "hard":
        raise ValueError(f"variety must be one of {', '.join(VARIETIES)}, got {variety!r}.")
    return Variety("hard", hard.sample_scene, hard.draw_scene, hard.label_scene,
                   hard.caption_scene, hard.GENERATOR_VERSION,
                   "Synthetic coloured shapes on textured backgrounds, with counts and relations, five true captions "
                   "per image", hard.SHAPES, hard.TEXTURES, hard.SHAPE_NOUNS)


def generate(out_dir: str | os.PathLike, n_train: int = 3000, n_val: int = 500, n_test: int = 500, seed: int = 0,
             width: int = 128, height: int = 128, verbose: bool = False, variety: str = "easy") -> dict[str, Path]:
    """Write the synthetic dataset under out_dir, skipping splits already complete; returns split -> annotation file.

    variety "easy" is the built-in set described above; "hard" adds textures, counts and more (hard.py)."""
    _variety(variety)  # every argument checked before anything is written
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check(name, value, 0, MAX_IMAGES_PER_SPLIT)
    _check("seed", seed, 0, 2**63 - 1)
    _check("width", width, MIN_SIDE, MAX_SIDE)
    _check("height", height, MIN_SIDE, MAX_SIDE)
    return write_set(Path(out_dir), (n_train, n_val, n_test), seed, width, height, verbose, _variety(variety))


def _bounded_integer(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number within [low, high], with a message saying which range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}{unit}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the synthetic-dataset options to a (sub)parser."""
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to write (annotations/, images/)")
    count = _bounded_integer(0, MAX_IMAGES_PER_SPLIT)
    side = _bounded_integer(MIN_SIDE, MAX_SIDE, " pixels")
    parser.add_argument("--train", type=count, default=3000, help="number of training images")
    parser.add_argument("--val", type=count, default=500, help="number of validation images")
    parser.add_argument("--test", type=count, default=500, help="number of test images")
    parser.add_argument("--seed", type=_bounded_integer(0, 2**63 - 1), default=0,
                        help="random seed; the same arguments give byte-identical files")
    parser.add_argument("--width", type=side, default=128, help="image width in pixels")
    parser.add_argument("--height", type=side, default=128, help="image height in pixels")
    parser.add_argument("--variety", choices=VARIETIES, default="easy",
                        help="easy: flat shapes on flat backgrounds (the built-in set); hard: textured backgrounds, "
                             "camouflaged objects, counts, relations, varied image sizes (hard.py)")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset from parsed arguments, printing one line per split; returns the exit status."""
    try:
        generate(args.out, n_train=args.train, n_val=args.val, n_test=args.test, seed=args.seed,
                 width=args.width, height=args.height, verbose=True, variety=args.variety)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the synthetic dataset under {args.out} ({error.strerror or error}); "
              "choose a writable --out directory.", file=sys.stderr)
        return 1
    return 0
