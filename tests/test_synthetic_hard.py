"""Tests for the hard synthetic variety: deterministic files, captions true to the objects (counts, relations),
and the variety it promises (textures, counts, camouflage, sizes)."""
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import objects
import prepare_data
from prepare import synthetic
from prepare.synthetic import easy
from prepare.synthetic import hard
from synthetic_coco import check_files, erode, load_coco, scenes, synonym_lines

NUMBERS = {"a": 1, "an": 1, "one": 1, "a single": 1, "only one": 1, "a pair of": 2, "two": 2, "three": 3,
           "four": 4, "five": 5, "six": 6}
# Written out here rather than read from the module, so that a renamed word in the module shows up as a failure.
NOUNS = {"circle": "circle", "disk": "circle", "disc": "circle", "dot": "circle", "square": "square",
         "box": "square", "block": "square", "triangle": "triangle", "star": "star", "diamond": "diamond",
         "rhombus": "diamond", "cross": "cross", "plus": "cross", "hexagon": "hexagon"}
PLURALS = {"circles": "circle", "disks": "circle", "discs": "circle", "dots": "circle", "squares": "square",
           "boxes": "square", "blocks": "square", "triangles": "triangle", "stars": "star", "diamonds": "diamond",
           "rhombuses": "diamond", "crosses": "cross", "pluses": "cross", "hexagons": "hexagon"}
COLOURS = "red|green|blue|yellow|orange|purple|pink|teal|brown|black"
GROUP = (rf"(a pair of|a|an|two|three|four|five|six) (?:(?:small|little|large|big) )?({COLOURS}) "
         rf"({'|'.join(list(PLURALS) + list(NOUNS))})")
RELATION = re.compile(rf"^{GROUP} (to the left of|to the right of|above|over|below|under|beneath|next to|beside) "
                      rf"{GROUP}\b")
TOTAL = re.compile(r"^(a single|only one|one|two|three|four|five|six) (?:shape|object)s?\b")
LEFT_TO_RIGHT = re.compile(r"^from left to right[:,] (.*?)\.?$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hard")
    synthetic.generate(out, n_train=150, n_val=10, n_test=10, seed=4, variety="hard")
    return out


def load(out: Path, split: str = "train") -> dict:
    return json.loads((out / "annotations" / f"captions_{split}.json").read_text())


def images_and_captions(out: Path, split: str = "train") -> list[tuple[dict, list[str]]]:
    """Each image, with its objects and background read from the instances and stuff files, and its captions."""
    data = scenes(out, split)
    captions: dict[int, list[str]] = {}
    for annotation in data["annotations"]:
        captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return [(image, captions[image["id"]]) for image in data["images"]]


def digest(out: Path) -> str:
    files = sorted(path for path in out.rglob("*") if path.is_file())
    return hashlib.sha256(b"".join(path.relative_to(out).as_posix().encode() + path.read_bytes()
                                   for path in files)).hexdigest()


def test_same_arguments_give_the_same_files(dataset, tmp_path):
    synthetic.generate(tmp_path, n_train=150, n_val=10, n_test=10, seed=4, variety="hard")
    assert digest(tmp_path) == digest(dataset)


def test_the_variety_and_its_own_generator_version_are_recorded(dataset):
    parameters = load(dataset)["info"]["parameters"]
    assert parameters["variety"] == "hard"
    assert parameters["generator_version"] == hard.GENERATOR_VERSION
    assert load(dataset)["info"]["version"] == str(hard.GENERATOR_VERSION)


def test_instances_and_stuff_files_are_coco_files_of_every_pair_and_texture(dataset):
    for split in ("train", "val", "test"):
        check_files(dataset, split, ["circle", "square", "triangle", "star", "diamond", "cross", "hexagon"],
                    ["grass", "sand", "sky", "stripes", "checkerboard", "noise"])


def test_object_masks_cover_the_fill_and_the_darker_outline(dataset):
    """Inside its outline, a mask holds its object's colour; its border ring is the darker outline, drawn with it."""
    instances = load_coco(dataset, "instances_train")
    checked = 0
    for image_id in instances.getImgIds()[:40]:
        image = instances.imgs[image_id]
        pixels = np.asarray(Image.open(dataset / "images" / "train" / image["file_name"]), dtype=float)
        line = max(1, round(min(image["width"], image["height"]) / 70))  # the outline's width
        for annotation in instances.loadAnns(instances.getAnnIds(imgIds=image_id)):
            mask = instances.annToMask(annotation) == 1
            fill, ring = erode(mask, line + 1), mask & ~erode(mask, line)
            if fill.sum() < 4:  # a tiny object is all outline
                continue
            colour = instances.cats[annotation["category_id"]]["name"].split()[0]
            inside = pixels[fill].mean(axis=0)  # colour jitter, noise and JPEG move it by about 30 at most
            assert np.abs(inside - easy.COLOURS[colour]).max() < 35, (image["file_name"], colour, inside)
            assert pixels[ring].mean() < 0.85 * inside.mean(), (image["file_name"], colour)
            checked += 1
    assert checked > 60


def test_synonyms_name_every_category_with_the_captions_words(dataset):
    comments, categories = synonym_lines(dataset)
    assert "synthetic_data.py" in comments[0]
    assert len(categories) == 70 and len({words[0] for words in categories}) == 70
    assert categories[0] == ["red circle", "red disk", "red disc", "red dot"]
    for words in categories:
        colour, shape = words[0].split()
        assert words[1:] == [f"{colour} {noun}" for noun, named in NOUNS.items() if named == shape and noun != shape]


def test_named_objects_are_in_the_image_with_their_counts(dataset):
    complete_per_image = []
    _, vocabulary = objects.split_objects(dataset, "train")  # the set's own synonyms.txt
    for image, captions in images_and_captions(dataset):
        present = Counter(f"{o['colour']} {o['shape']}" for o in image["objects"])
        complete = 0
        for caption in captions:
            named = objects.named_objects(caption, vocabulary)
            assert all(present[pair] == count for pair, count in named.items()), (caption, present)
            complete += named == present
        complete_per_image.append(complete)
    assert min(complete_per_image) >= 2  # every image has two captions naming all of its objects


def _members(image: dict, colour: str, noun: str) -> list[dict]:
    shape = NOUNS.get(noun) or PLURALS[noun]
    return [o for o in image["objects"] if o["colour"] == colour and o["shape"] == shape]


def _centre(obj: dict) -> tuple[float, float]:
    x, y, w, h = obj["bbox"]
    return x + w / 2, y + h / 2


def _holds(relation: str, a: dict, b: dict, side: int) -> bool:
    """Whether "a <relation> b" is true of two objects, with the generator's margins (fractions of the square)."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    dx, dy = (bx - ax) / side, (by - ay) / side
    return {"to the left of": dx >= 0.2, "to the right of": dx <= -0.2, "above": dy >= 0.2, "over": dy >= 0.2,
            "below": dy <= -0.2, "under": dy <= -0.2, "beneath": dy <= -0.2,
            "next to": abs(dx) >= 0.2 and abs(dy) <= 0.12, "beside": abs(dx) >= 0.2 and abs(dy) <= 0.12}[relation]


def test_relations_hold_for_every_member_of_both_groups(dataset):
    checked = 0
    for image, captions in images_and_captions(dataset):
        side = min(image["width"], image["height"])
        for caption in captions:
            match = RELATION.match(caption.lower())
            if not match:
                continue
            number_a, colour_a, noun_a, relation, number_b, colour_b, noun_b = match.groups()
            group_a, group_b = _members(image, colour_a, noun_a), _members(image, colour_b, noun_b)
            assert (len(group_a), len(group_b)) == (NUMBERS[number_a], NUMBERS[number_b]), caption
            assert all(_holds(relation, a, b, side) for a in group_a for b in group_b), caption
            checked += 1
    assert checked > 30


def test_totals_and_left_to_right_orders_are_true(dataset):
    totals = orders = 0
    for image, captions in images_and_captions(dataset):
        for caption in captions:
            if match := TOTAL.match(caption.lower()):
                assert NUMBERS[match.group(1)] == len(image["objects"]), caption
                totals += 1
            if match := LEFT_TO_RIGHT.match(caption.lower()):
                named = re.findall(GROUP, match.group(1))
                found = [_members(image, colour, noun) for _, colour, noun in named]
                assert all(len(group) == 1 for group in found) and len(found) == len(image["objects"]), caption
                xs = [_centre(group[0])[0] for group in found]
                assert xs == sorted(xs), caption
                orders += 1
    assert totals > 20 and orders > 0


def test_objects_lie_anywhere_inside_the_image(dataset):
    outside_the_central_square = 0
    for image, _ in images_and_captions(dataset):
        width, height = image["width"], image["height"]
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        for x, y, w, h in (o["bbox"] for o in image["objects"]):
            assert -0.1 <= x and x + w <= width + 0.1 and -0.1 <= y and y + h <= height + 0.1
            outside_the_central_square += not (left - 0.1 <= x and x + w <= left + side + 0.1
                                               and top - 0.1 <= y and y + h <= top + side + 0.1)
    assert outside_the_central_square > 10  # what a centre crop would cut


def test_the_set_has_the_promised_variety(dataset):
    images = [image for image, _ in images_and_captions(dataset)]
    assert {image["background"] for image in images} == set(hard.TEXTURES)
    ratios = [image["width"] / image["height"] for image in images]
    assert min(ratios) < 0.7 and max(ratios) > 1.6 and 0.59 < min(ratios) and max(ratios) < 1.81
    assert len({image["width"] for image in images}) > 20
    with_counts = [image for image in images
                   if max(Counter((o["colour"], o["shape"]) for o in image["objects"]).values()) > 1]
    assert len(with_counts) > 20
    assert max(len(image["objects"]) for image in images) >= 5
    diameters = [max(o["bbox"][2:]) / min(image["width"], image["height"]) for image in images
                 for o in image["objects"]]
    assert min(diameters) < 0.13 and max(diameters) > 0.28
    camouflaged = [image for image in images for o in image["objects"]
                   if o["colour"] in {"grass": ["green"], "sand": ["yellow", "orange", "brown"],
                                      "sky": ["blue"]}.get(image["background"], [])]
    assert len(camouflaged) > 5
    assert "hexagon" in {o["shape"] for image in images for o in image["objects"]}
    # Every shape goes by more than one name somewhere in the captions.
    words = Counter(word for _, captions in images_and_captions(dataset) for caption in captions
                    for word in re.findall(r"[a-z]+", caption.lower()))
    assert {"disk", "disc", "dot", "box", "block", "rhombus", "plus"} <= set(words)


def test_command_line_variety_and_the_easy_default(tmp_path, capsys):
    assert prepare_data.main(["synthetic", "--out", str(tmp_path / "hard"), "--train", "2", "--val", "1",
                              "--test", "1", "--variety", "hard"]) == 0
    assert "hard" in capsys.readouterr().out
    assert load(tmp_path / "hard")["info"]["parameters"]["variety"] == "hard"
    assert prepare_data.main(["synthetic", "--out", str(tmp_path / "easy"), "--train", "2", "--val", "1",
                              "--test", "1"]) == 0
    parameters = load(tmp_path / "easy")["info"]["parameters"]
    assert "variety" not in parameters and parameters["generator_version"] == easy.GENERATOR_VERSION
    with pytest.raises(ValueError, match="variety must be one of easy, hard"):
        synthetic.generate(tmp_path / "other", n_train=1, variety="medium")


def test_ensure_dataset_makes_the_variety_asked_for(tmp_path):
    assert prepare_data.ensure_dataset("synthetic", tmp_path, n_train=2, n_val=1, n_test=1, variety="hard") == [
        "train", "val", "test"]
    assert load(tmp_path)["info"]["parameters"]["variety"] == "hard"
