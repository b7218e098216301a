"""Data preparation CLI: generate the synthetic COCO-format set or fetch real MS COCO.

    python prepare_data.py synthetic --out data/synthetic
    python prepare_data.py coco --out data/coco --year 2014
"""
from captioning.interrupts import quiet_interrupts

if __name__ == "__main__":  # before torch loads, which takes seconds: a Ctrl-C then ends the command quietly
    quiet_interrupts()

import argparse
import sys
from pathlib import Path

from captioning.annotations import annotation_path
from captioning.config import read_at_least
from prepare import coco_download, synthetic


def ensure_dataset(dataset: str, data_dir: str | Path, n_train: int = 3000, n_val: int = 500, n_test: int = 500,
                   seed: int = 0, coco_year: int = 2014, download: bool = False, karpathy_split: str | Path = "",
                   variety: str = "easy") -> list[str]:
    """Make sure a dataset is on disk (generate the synthetic one of that variety, or check / fetch COCO); returns
    its split names.

    karpathy_split: Karpathy's dataset_coco.json, from which the karpathy_train/val/test splits that
    configs/coco.json trains on are written (COCO itself must be there, or download must be True).
    """
    n_train, n_val, n_test = (_split_size(name, value) for name, value in  # named as the notebook names them
                              (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)))
    seed, coco_year = read_at_least("seed", seed, 0), read_at_least("coco_year", coco_year, 2014)
    if dataset == "synthetic":
        code = main(["synthetic", "--out", str(data_dir), "--train", str(n_train), "--val", str(n_val),
                     "--test", str(n_test), "--seed", str(seed), "--variety", variety])
        splits = ["train", "val", "test"]
    elif dataset == "coco":
        splits = [f"train{coco_year}", f"val{coco_year}"]
        missing = [split for split in splits if not annotation_path(data_dir, split).exists()]
        if missing and not download:
            raise FileNotFoundError(f"MS COCO {coco_year} is not in {data_dir} (missing captions_{missing[0]}.json): "
                                    f"run `python prepare_data.py coco --out {data_dir} --year {coco_year}` "
                                    f"(about 19 GB) or set download_coco = True")
        arguments = ["coco", "--out", str(data_dir), "--year", str(coco_year)]
        if karpathy_split:
            arguments += ["--karpathy-split", str(karpathy_split)]
            splits = [f"karpathy_{split}" for split in ("train", "val", "test")]
        # With everything downloaded, a run only writes the split files (nothing is fetched again).
        code = main(arguments) if missing or karpathy_split else 0
    else:
        raise ValueError(f"dataset must be 'synthetic' or 'coco', got {dataset!r}")
    if code != 0:
        raise RuntimeError(f"preparing the {dataset} dataset in {data_dir} failed (see the message above)")
    return splits


def _split_size(name: str, value: object) -> int:
    """A synthetic split's size as a notebook gives it, refused in one line naming the notebook's parameter."""
    number = read_at_least(name, value, 0)
    if number > synthetic.MAX_IMAGES_PER_SPLIT:
        raise ValueError(f"{name} must be at most {synthetic.MAX_IMAGES_PER_SPLIT}, got {value!r}")
    return number


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("synthetic", help="generate the built-in synthetic COCO-format dataset")
    synthetic.add_arguments(generate)
    generate.set_defaults(run=synthetic.run)
    download = commands.add_parser("coco", help="download and extract MS COCO captions and images")
    coco_download.add_arguments(download)
    download.set_defaults(run=coco_download.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
