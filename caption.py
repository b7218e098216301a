"""Caption images with a trained checkpoint: prints `path<TAB>caption`, one line per image.

    python caption.py --checkpoint models/best.pt images/photo1.jpg images/photo2.jpg
"""
from __future__ import annotations

import argparse
import sys

from checkpoint import CheckpointError
from inference import Captioner


def main(argv: list[str] | None = None) -> int:
    """Caption every image given; unreadable ones are reported on stderr and make the exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py, e.g. models/best.pt")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--beam-size", type=int, default=1, help="1 = greedy decoding (default)")
    parser.add_argument("--batch-size", type=int, default=32, help="images captioned together")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.beam_size < 1 or args.batch_size < 1:
        parser.error("--beam-size and --batch-size must be at least 1")
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
        for path, caption, error in captioner.caption_files(args.images, args.beam_size, args.batch_size):
            if error:
                failures += 1
                print(f"error: {error}", file=sys.stderr)
            else:
                print(f"{path}\t{caption}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: the images above were captioned, the rest were not", file=sys.stderr)
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
