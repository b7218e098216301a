"""Annotation files: where a split's COCO captions file and its images are, and the one reader of those files.

A dataset folder holds annotations/captions_<split>.json (COCO captions format: "images" with id and file_name,
"annotations" with image_id and caption) and images/<split>/; the synthetic set, COCO and Karpathy's splits alike.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO


def annotation_path(data_dir: str | Path, split: str) -> Path:
    """DIR/annotations/captions_<split>.json."""
    return Path(data_dir) / "annotations" / f"captions_{split}.json"


def image_path(data_dir: str | Path, split: str, file_name: str) -> Path:
    """Where an image of a split lives; a file_name with a "/" is relative to DIR/images/ (Karpathy splits)."""
    root = Path(data_dir) / "images"
    return root / file_name if "/" in file_name else root / split / file_name


def load_coco(path: Path) -> COCO:
    """pycocotools COCO for a captions file, with clear errors for a missing, empty or malformed file."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"annotation file {path} is not valid JSON: {error}") from None
    except (KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"annotation file {path} is not a COCO captions file ({error!r})") from None
    if not coco.dataset.get("images"):
        raise ValueError(f"annotation file {path} lists no images")
    for index, image in enumerate(coco.dataset["images"]):
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise ValueError(f"annotation file {path}: images[{index}] (id {image.get('id')!r}) has file_name "
                             f"{image.get('file_name')!r}, not a file name")
    for index, annotation in enumerate(coco.dataset.get("annotations", [])):
        if not isinstance(annotation.get("caption"), str):
            raise ValueError(f"annotation file {path}: annotations[{index}] (image {annotation.get('image_id')!r}) "
                             f"has caption {annotation.get('caption')!r}, not a string")
    return coco


def image_files(data_dir: str | Path, split: str) -> dict[int, Path]:
    """Every image of a split: image id -> its file."""
    images = load_coco(annotation_path(data_dir, split)).imgs
    return {image_id: image_path(data_dir, split, image["file_name"]) for image_id, image in images.items()}
