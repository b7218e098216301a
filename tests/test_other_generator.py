"""tools/other_generator.py, the independent synthetic set: its files are COCO's, its masks cover what is drawn, its
captions name only what is in the image, and it is deterministic and leaves others' files alone."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioning import objects
from tools import other_generator
from test_layout import imported_modules

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "other_generator.py"
COUNTS = {"train": 20, "val": 8, "test": 8}


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        return COCO(str(path))


def _generate(out: Path, seed: int = 0, synonyms: bool = True) -> Path:
    other_generator.generate(out, COUNTS["train"], COUNTS["val"], COUNTS["test"], seed=seed, synonyms=synonyms)
    return out


def _references(data_dir: Path, split: str) -> dict[int, list[str]]:
    references: dict[int, list[str]] = {}
    for annotation in json.loads((data_dir / "annotations" / f"captions_{split}.json").read_text())["annotations"]:
        references.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return references


@pytest.fixture(scope="module")
def other_set(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="module")
def plain_set(tmp_path_factory) -> Path:
    """The same set without synonyms.txt: captions are read with the category names alone."""
    return _generate(tmp_path_factory.mktemp("other_plain"), synonyms=False)


def test_every_file_loads_with_pycocotools(other_set):
    image_ids = []
    for split, count in COUNTS.items():
        captions = _coco(other_set / "annotations" / f"captions_{split}.json")
        instances = _coco(other_set / "annotations" / f"instances_{split}.json")
        stuff = _coco(other_set / "annotations" / f"stuff_{split}.json")
        assert len(captions.imgs) == count and set(instances.imgs) == set(stuff.imgs) == set(captions.imgs)
        assert all(len(captions.imgToAnns[image_id]) == 5 for image_id in captions.imgs)
        for image in captions.imgs.values():
            with Image.open(other_set / "images" / split / image["file_name"]) as picture:
                assert picture.format == "JPEG" and picture.size == (image["width"], image["height"])
            assert 1 <= sum(not a["iscrowd"] for a in instances.imgToAnns[image["id"]]) + \
                sum(a["iscrowd"] for a in instances.imgToAnns[image["id"]]) <= 5
            assert len(stuff.imgToAnns[image["id"]]) == 1
        for annotation in instances.dataset["annotations"]:
            if annotation["iscrowd"]:  # uncompressed RLE
                assert isinstance(annotation["segmentation"]["counts"], list)
            else:  # COCO polygons: a list of flat [x1, y1, x2, y2, ...] lists
                assert isinstance(annotation["segmentation"], list)
                assert all(len(polygon) >= 6 and len(polygon) % 2 == 0 for polygon in annotation["segmentation"])
        categories = instances.dataset["categories"]
        assert all(category["name"].split()[1:] == [category["supercategory"]] for category in categories)
        assert {category["name"].split()[0] for category in categories} == set(other_generator.COLOURS)
        assert {category["name"] for category in stuff.dataset["categories"]} == set(other_generator.BACKGROUNDS)
        image_ids += list(captions.imgs)
    assert len(image_ids) == len(set(image_ids))


def test_some_images_hold_a_crowd(other_set):
    crowds = [a for split in COUNTS
              for a in _coco(other_set / "annotations" / f"instances_{split}.json").dataset["annotations"]
              if a["iscrowd"]]
    assert crowds


def _grown(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask grown by steps pixels (4-neighbourhood); shrunk for a negative steps."""
    grown = mask.copy()
    for _ in range(abs(steps)):
        padded = np.pad(grown, 1, constant_values=steps < 0)
        around = [padded[1:-1, :-2], padded[1:-1, 2:], padded[:-2, 1:-1], padded[2:, 1:-1]]
        grown = np.logical_or.reduce([grown, *around]) if steps > 0 else np.logical_and.reduce([grown, *around])
    return grown


def test_each_mask_covers_pixels_of_its_colour(other_set):
    """Up to its edge (objects are drawn with blended edges, and JPEG blurs colour by a pixel or two), each mask is
    the object: its inside shows the category's colour, and no pixel of that colour near the object lies outside
    it."""
    for split in COUNTS:
        instances = _coco(other_set / "annotations" / f"instances_{split}.json")
        for image in instances.imgs.values():
            pixels = np.asarray(Image.open(other_set / "images" / split / image["file_name"]), dtype=np.float32)
            for annotation in instances.imgToAnns[image["id"]]:
                colour = instances.cats[annotation["category_id"]]["name"].split()[0]
                mask = instances.annToMask(annotation).astype(bool)
                distance = np.linalg.norm(pixels - np.array(other_generator.COLOURS[colour]), axis=2)
                where = (image["file_name"], annotation["id"])
                inside = _grown(mask, -1)
                if annotation["iscrowd"] or inside.sum() < 10:  # tiny objects are all edge, blurred by JPEG
                    assert np.median(distance[mask]) < 60, where
                else:
                    assert np.median(distance[inside]) < 40, where
                    assert (distance[inside] < 60).mean() > 0.9, where
                near = _grown(mask, 5) & ~_grown(mask, 2)
                assert (distance[near] < 60).sum() <= max(2, 0.02 * mask.sum()), where


@pytest.mark.parametrize("which", ["other_set", "plain_set"])
def test_captions_name_only_objects_in_the_image(which, request):
    data_dir = request.getfixturevalue(which)
    for split in COUNTS:
        references = _references(data_dir, split)
        for k in range(5):  # every caption, not only the first: each is true for its image, counts included
            report = objects.split_report(data_dir, split, references, {i: r[k] for i, r in references.items()})
            assert report["model"]["precision"] == 1.0, (split, k)
        assert report["human"]["precision"] == 1.0
    if which == "other_set":  # with its synonyms, a reader finds nearly every object the captions name
        assert report["human"]["recall"] > 0.8


def test_some_caption_of_each_image_counts_every_object(other_set):
    for split in COUNTS:
        found, vocabulary = objects.split_objects(other_set, split)
        for image_id, captions in _references(other_set, split).items():
            named = [objects.named_objects(caption, vocabulary) for caption in captions]
            assert any(all(counts[category] == number for category, number in found[image_id].counts.items())
                       for counts in named), captions


def test_aspect_ratios_span_the_range_and_objects_leave_the_centre(other_set):
    aspects, outside = [], 0
    for split in COUNTS:
        instances = _coco(other_set / "annotations" / f"instances_{split}.json")
        for image in instances.imgs.values():
            width, height = image["width"], image["height"]
            aspects.append(width / height)
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            for annotation in instances.imgToAnns[image["id"]]:
                x, y, w, h = annotation["bbox"]
                outside += x + w <= left or x >= left + side or y + h <= top or y >= top + side
    assert min(aspects) < 0.75 and max(aspects) > 1.6
    assert all(0.6 <= aspect <= 1.8 for aspect in aspects)
    assert outside > 0  # some objects lie wholly outside the central square


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_same_seed_same_bytes(other_set, tmp_path):
    again = _contents(_generate(tmp_path / "again"))
    assert again == _contents(other_set)
    other = _contents(_generate(tmp_path / "other_seed", seed=1))
    assert other["annotations/captions_train.json"] != again["annotations/captions_train.json"]


def test_no_synonyms_leaves_out_its_list(other_set, plain_set, tmp_path):
    assert (other_set / "annotations" / "synonyms.txt").is_file()
    assert not (plain_set / "annotations" / "synonyms.txt").exists()
    out = tmp_path / "set"
    other_generator.generate(out, 6, 0, 0)
    other_generator.generate(out, 3, 0, 0, synonyms=False)  # a rerun replaces what the first run wrote
    assert not (out / "annotations" / "synonyms.txt").exists()
    assert sorted(path.name for path in (out / "images" / "train").iterdir()) == \
        [f"train_{index:07d}.jpg" for index in (1, 2, 3)]


def test_refuses_files_of_another_program(tmp_path):
    theirs = tmp_path / "annotations" / "captions_train.json"
    theirs.parent.mkdir()
    text = json.dumps({"info": {"contributor": "synthetic_data.py"}, "images": [], "annotations": []})
    theirs.write_text(text)
    assert other_generator.main(["--out", str(tmp_path), "--train", "2", "--val", "0", "--test", "0"]) == 2
    assert theirs.read_text() == text
    assert not (tmp_path / "images").exists() and not (tmp_path / "annotations" / "synonyms.txt").exists()


def test_imports_no_project_module():
    """Independent of the project's generators, as another lab's would be: only third-party libraries."""
    imported = imported_modules(TOOL)
    project = {path.stem for path in ROOT.glob("*.py")}
    assert not imported & project


def test_command_line_help():
    result = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--no-synonyms" in result.stdout
