"""Data preparation CLI: generate the synthetic COCO-format set or fetch real MS COCO.

    python prepare_data.py synthetic --out data/synthetic
    python prepare_data.py coco --out data/coco --year 2014
"""
import argparse
import sys

import coco_download
import synthetic_data


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synthetic = commands.add_parser("synthetic", help="generate the built-in synthetic COCO-format dataset")
    synthetic_data.add_arguments(synthetic)
    synthetic.set_defaults(run=synthetic_data.run)
    coco = commands.add_parser("coco", help="download and extract MS COCO captions and images")
    coco_download.add_arguments(coco)
    coco.set_defaults(run=coco_download.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
