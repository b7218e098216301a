"""Annotation files: where a split's COCO files and its images are, and the one reader of those files.

A dataset folder holds annotations/captions_<split>.json (COCO captions format: "images" with id and file_name,
"annotations" with image_id and caption) and images/<split>/; the synthetic set, COCO and Karpathy's splits alike.
Where a set annotates its objects it does so in COCO's own formats, beside the captions: instances_<split>.json
(every object: category, box, segmentation as polygons or RLE, iscrowd) and COCO-Stuff's stuff_<split>.json (the
same format, for backgrounds such as grass or sky). A split whose images sit in folders of another split
(Karpathy's: "val2014/COCO_val2014_....jpg") reads the instances of those splits (instances_val2014.json).
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

from pycocotools.coco import COCO

from captioning.files import brief, check_file


def annotation_path(data_dir: str | Path, split: str) -> Path:
    """DIR/annotations/captions_<split>.json."""
    return Path(data_dir) / "annotations" / f"captions_{split}.json"


def image_path(data_dir: str | Path, split: str, file_name: str) -> Path:
    """Where an image of a split lives; a file_name with a "/" is relative to DIR/images/ (Karpathy splits)."""
    root = Path(data_dir) / "images"
    return root / file_name if "/" in file_name else root / split / file_name


def object_files(data_dir: str | Path, kind: str, split: str, file_names: Iterable[str] = ()) -> list[Path]:
    """The instances (kind "instances") or stuff ("stuff") files that cover a split's images: its own,
    DIR/annotations/<kind>_<split>.json, or, for images named inside another split's folder, those splits' files.
    FileNotFoundError names the first one missing."""
    sources = sorted({name.split("/", 1)[0] for name in file_names if "/" in name}) or [split]
    paths = [Path(data_dir) / "annotations" / f"{kind}_{source}.json" for source in sources]
    for path in paths:
        if not check_file(path, f"{kind} annotation file").is_file():
            raise FileNotFoundError(f"{kind} annotation file not found: {path}")
    return paths


def _read_coco(path: Path, what: str) -> COCO:
    """pycocotools COCO for one file, with one-line errors for a missing, non-JSON or malformed file."""
    if not check_file(path, "annotation file").is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"annotation file {path} is not valid JSON: {brief(error)}") from None
    except RecursionError:
        raise ValueError(f"annotation file {path} is nested too deeply to be a COCO {what} file") from None
    except (KeyError, TypeError, AssertionError, AttributeError) as error:
        raise ValueError(f"annotation file {path} is not a COCO {what} file ({brief(error)})") from None
    return coco


def load_instances(path: Path) -> COCO:
    """pycocotools COCO for an instances or stuff file: categories with id and name, annotations with image_id,
    category_id and bbox (segmentations are checked when annToMask reads them)."""
    coco = _read_coco(path, "instances")
    categories = coco.dataset.get("categories")
    if not isinstance(categories, list) or not all(isinstance(category, dict) and isinstance(category.get("name"), str)
                                                   and "id" in category for category in categories):
        raise ValueError(f"annotation file {path} is not a COCO instances file: 'categories' must list "
                         "{\"id\", \"name\"} entries")
    for index, annotation in enumerate(coco.dataset.get("annotations", [])):
        if not isinstance(annotation, dict) or annotation.get("category_id") not in coco.cats \
                or "image_id" not in annotation:
            raise ValueError(f"annotation file {path}: annotations[{index}] has no image_id or a category_id that "
                             "'categories' does not list")
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ValueError(f"annotation file {path}: annotations[{index}] has bbox {box!r}, not [x, y, w, h]")
    return coco


def load_coco(path: Path) -> COCO:
    """pycocotools COCO for a captions file, with clear errors for a missing, empty or malformed file."""
    coco = _read_coco(path, "captions")
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
