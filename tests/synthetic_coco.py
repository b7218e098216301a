"""Reading and checking the COCO files of a synthetic set, for the tests of both varieties."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

# Written out here rather than read from the module, so that a renamed word in the module shows up as a failure.
COLOUR_NAMES = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "teal", "brown", "black"]


def read(out: Path, name: str) -> dict:
    """An annotation file of a set as plain JSON: name is e.g. "instances_train"."""
    return json.loads((out / "annotations" / f"{name}.json").read_text(encoding="utf-8"))


def load_coco(out: Path, name: str) -> COCO:
    """An annotation file of a set, loaded by pycocotools."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(out / "annotations" / f"{name}.json"))


def scenes(out: Path, split: str) -> dict:
    """The captions file, each image given its "objects" (colour, shape, bbox) in drawing order and its "background",
    read back from the instances and stuff files."""
    data = read(out, f"captions_{split}")
    instances, stuff = read(out, f"instances_{split}"), read(out, f"stuff_{split}")
    pairs = {category["id"]: category for category in instances["categories"]}
    backgrounds = {category["id"]: category["name"] for category in stuff["categories"]}
    objects: dict[int, list[dict]] = {}
    for annotation in instances["annotations"]:
        category = pairs[annotation["category_id"]]
        colour = category["name"].removesuffix(f" {category['supercategory']}")
        objects.setdefault(annotation["image_id"], []).append(
            {"colour": colour, "shape": category["supercategory"], "bbox": annotation["bbox"]})
    background = {annotation["image_id"]: backgrounds[annotation["category_id"]]
                  for annotation in stuff["annotations"]}
    for image in data["images"]:
        image["objects"] = objects.get(image["id"], [])
        image["background"] = background[image["id"]]
    return data


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask less `steps` pixels along its border (4-neighbourhood)."""
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask


def check_files(out: Path, split: str, shapes: list[str], backgrounds: list[str]) -> None:
    """The instances and stuff files load with pycocotools and agree with the captions file and each other: the same
    info and images, every category listed, one mask per object and per background, which together tile the image."""
    captions = load_coco(out, f"captions_{split}")
    instances, stuff = load_coco(out, f"instances_{split}"), load_coco(out, f"stuff_{split}")
    for coco in (instances, stuff):
        assert coco.dataset["info"] == captions.dataset["info"] and coco.dataset["licenses"] == []
        assert coco.dataset["images"] == captions.dataset["images"]
    assert all(set(image) == {"id", "file_name", "width", "height"} for image in captions.dataset["images"])
    pairs = [(colour, shape) for colour in COLOUR_NAMES for shape in shapes]
    assert instances.dataset["categories"] == [{"id": number, "name": f"{colour} {shape}", "supercategory": shape}
                                               for number, (colour, shape) in enumerate(pairs, start=1)]
    assert stuff.dataset["categories"] == [{"id": number, "name": name, "supercategory": "background"}
                                           for number, name in enumerate(backgrounds, start=101)]
    ids = list(instances.anns) + list(stuff.anns)
    assert len(ids) == len(set(ids))
    for image_id, image in captions.imgs.items():
        union = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for annotation in instances.loadAnns(instances.getAnnIds(imgIds=image_id)):
            mask = instances.annToMask(annotation)
            assert mask.shape == union.shape and annotation["iscrowd"] == 0
            assert annotation["area"] == float(mask.sum()) > 0
            assert not (mask & union).any(), (image["file_name"], annotation["id"])  # the masks do not overlap
            union |= mask
            rows, columns = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]  # the drawn box, rounded to 0.1: the mask's pixels lie in it
            assert x - 1 <= columns.min() and columns.max() <= x + w + 1, (image["file_name"], annotation)
            assert y - 1 <= rows.min() and rows.max() <= y + h + 1, (image["file_name"], annotation)
        (background,) = stuff.loadAnns(stuff.getAnnIds(imgIds=image_id))
        assert (stuff.annToMask(background) == 1 - union).all(), image["file_name"]
        assert background["area"] == float((1 - union).sum())
        assert background["bbox"] == [0, 0, image["width"], image["height"]] and background["iscrowd"] == 0


def synonym_lines(out: Path) -> tuple[list[str], list[list[str]]]:
    """(comment lines, categories) of a set's synonyms file, each category its comma-separated names."""
    lines = (out / "annotations" / "synonyms.txt").read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    categories = [[word.strip() for word in line.split(",")] for line in lines if line and not line.startswith("#")]
    return comments, categories
