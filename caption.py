"""Caption images with a trained checkpoint: prints `path<TAB>caption`, one line per image.

    python caption.py --checkpoint models/best.pt images/photo1.jpg images/photo2.jpg
    python caption.py --checkpoint models/best.pt --maps maps/ images/photo1.jpg   # + maps/photo1.png, word maps
"""
from __future__ import annotations

from captioning.interrupts import quiet_interrupts

if __name__ == "__main__":  # before torch loads, which takes seconds: a Ctrl-C then ends the command quietly
    quiet_interrupts()

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from captioning.checkpoint import CheckpointError
from captioning.inference import Captioner

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def main(argv: list[str] | None = None) -> int:
    """Caption every image given; unreadable ones are reported on stderr and make the exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py, e.g. models/best.pt")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--beam-size", type=int, default=1, help="1 = greedy decoding (default)")
    parser.add_argument("--batch-size", type=int, default=32, help="images captioned together")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--maps", type=Path, metavar="OUT_DIR",
                        help="also write OUT_DIR/<image name>.png: the caption word by word, each word's map over "
                             "the image (Grad-CAM); files already there are not replaced")
    args = parser.parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error("--beam-size and --batch-size must be at least 1")
    targets = map_paths(args.maps, args.images) if args.maps else None
    if targets and (taken := [str(path) for path in targets if path.exists()]):
        print(f"error: {taken[0]} exists already and is not replaced: remove it or give another --maps folder",
              file=sys.stderr)
        return 2
    try:
        if targets:
            args.maps.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot make the --maps folder {args.maps} ({error.strerror or error})", file=sys.stderr)
        return 2
    try:
        captioner = Captioner(args.checkpoint, args.device)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    failures = 0
    try:
        for path, caption, error in caption_and_draw(captioner, args, targets):
            if error:
                failures += 1
                print(f"error: {error}", file=sys.stderr)
            else:
                print(f"{path}\t{caption}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: the images above were captioned, the rest were not", file=sys.stderr)
        return 130
    return 1 if failures else 0


def map_paths(out_dir: Path, images: Sequence[str]) -> list[Path]:
    """OUT_DIR/<image name>.png for each image; a name met again gets _2, _3, ... so that none overwrites another."""
    targets, used = [], set()
    for image in images:
        stem, number = Path(image).stem, 1
        while (name := stem if number == 1 else f"{stem}_{number}") in used:
            number += 1
        used.add(name)
        targets.append(out_dir / f"{name}.png")
    return targets


def caption_and_draw(captioner: Captioner, args: argparse.Namespace, targets: list[Path] | None
                     ) -> Iterator[tuple[str, str | None, str | None]]:
    """(path, caption, error) per image, as Captioner.caption_files; with targets, each image's word maps are
    drawn into its target file as well."""
    if targets is None:
        yield from captioner.caption_files(args.images, args.beam_size, args.batch_size)
        return
    import matplotlib.pyplot as plt  # only here: plain captioning does not pay for matplotlib

    from captioning import viz
    from captioning.wordmaps import word_maps_files
    results = word_maps_files(captioner, args.images, args.beam_size, args.batch_size)
    for (path, maps, error), target in zip(results, targets):
        if maps is not None:
            figure = viz.show_word_maps([maps], titles=[Path(path).name])
            error = save_figure(figure, target)
            plt.close(figure)
        yield path, None if error else maps.caption, error


def save_figure(figure: Figure, target: Path) -> str | None:
    """Write a figure to a new PNG file; the reason when it cannot (a file that appeared meanwhile is kept)."""
    try:
        file = open(target, "xb")  # exclusive: never replaces a file that appeared meanwhile
    except FileExistsError:
        return f"{target} appeared meanwhile and is not replaced"
    except OSError as failure:
        return f"cannot write {target} ({failure.strerror or failure})"
    try:
        with file:
            figure.savefig(file, format="png", dpi=100)
    except OSError as failure:  # a full disk: the half-written file is ours to remove
        target.unlink(missing_ok=True)
        return f"cannot write {target} ({failure.strerror or failure})"
    return None


if __name__ == "__main__":
    sys.exit(main())
