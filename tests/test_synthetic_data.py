"""Tests for the synthetic coloured-shapes dataset: files, COCO validity, caption truth, idempotent re-runs."""
import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from prepare import synthetic
from prepare.synthetic import easy
from synthetic_coco import check_files, erode, load_coco, read, scenes, synonym_lines

# Written out here rather than read from the module, so that a renamed word in the module shows up as a failure.
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "teal", "brown", "black"]
NOUNS = {"circle": "circle", "disk": "circle", "square": "square", "triangle": "triangle", "star": "star",
         "diamond": "diamond", "cross": "cross"}
PLURALS = {"circles": "circle", "disks": "circle", "squares": "square", "triangles": "triangle", "stars": "star",
           "diamonds": "diamond", "crosses": "cross"}
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
BACKGROUND_PHRASE = re.compile(r"\b(white|gray|beige|light blue|light green|pink) (background|backdrop)\b")
NOUN_PHRASE = (rf"(?:({'|'.join(SIZE_WORDS)}) )?({'|'.join(COLOURS)}) ({'|'.join(NOUNS)})\b")
RELATION = re.compile(NOUN_PHRASE + r" (?:is )?(to the left of|to the right of|above|over|below|under|beneath"
                      r"|next to|beside) (?:a|an|the) " + NOUN_PHRASE)
WITH_IT = re.compile(NOUN_PHRASE + r" with (?:a|an) " + NOUN_PHRASE + r" (to its left|to its right|above it"
                     r"|over it|below it|under it|beneath it|next to it|beside it)")
PLACE = re.compile(NOUN_PHRASE + r" (?:is |sitting |placed )?((?:in|at|on|near) the (?:top|upper|bottom|lower"
                   r"|left|right|center|middle)(?: left| right)?)\b")
SIDE_BY_SIDE = re.compile(NOUN_PHRASE + r" and (?:a|an) " + NOUN_PHRASE + r",? (side by side|one above the other)")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small dataset generated once for the read-only tests."""
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, n_train=150, n_val=20, n_test=20, seed=3)
    return out


def load(out: Path, split: str) -> dict:
    with open(out / "annotations" / f"captions_{split}.json", encoding="utf-8") as handle:
        return json.load(handle)


def load_scenes(out: Path, split: str) -> dict:
    """The captions file with each image's objects and background, read from the instances and stuff files; an
    object's size is read off its box (small shapes span at most 0.24 of the side, large ones at least 0.27)."""
    data = scenes(out, split)
    for image in data["images"]:
        for obj in image["objects"]:
            obj["size"] = "large" if max(obj["bbox"][2:]) > 0.256 * min(image["width"], image["height"]) else "small"
    return data


def captions_by_image(data: dict) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {}
    for annotation in data["annotations"]:
        result.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return result


def centre(obj: dict) -> tuple[float, float]:
    x, y, w, h = obj["bbox"]
    return x + w / 2, y + h / 2


def find(image: dict, colour: str, noun: str) -> dict:
    """The object a colour + shape noun phrase refers to; fails if the image has no such object."""
    matches = [o for o in image["objects"] if o["colour"] == colour and o["shape"] == NOUNS[noun]]
    assert len(matches) == 1, f"{colour} {noun} is not in image {image['id']}: {image['objects']}"
    return matches[0]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_files(tmp_path):
    synthetic.generate(tmp_path / "a", n_train=8, n_val=3, n_test=3, seed=5)
    synthetic.generate(tmp_path / "b", n_train=8, n_val=3, n_test=3, seed=5)
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(first) == 3 * 3 + 1 + 8 + 3 + 3  # captions, instances and stuff per split, synonyms, images
    assert first == second
    synthetic.generate(tmp_path / "c", n_train=8, n_val=3, n_test=3, seed=6)
    assert all_files(tmp_path / "c") != first


def test_changing_train_size_leaves_other_splits_alone(tmp_path):
    synthetic.generate(tmp_path / "a", n_train=5, n_val=4, n_test=4, seed=1)
    synthetic.generate(tmp_path / "b", n_train=9, n_val=4, n_test=4, seed=1)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    for name in a:
        if "train" not in name:
            assert a[name] == b[name], name
    # One stream per image: the first training images do not depend on how many follow.
    assert a["images/train/synthetic_train_000003.jpg"] == b["images/train/synthetic_train_000003.jpg"]


def test_annotations_load_with_pycocotools(dataset):
    image_ids, annotation_ids = [], []
    for split in synthetic.SPLITS:
        coco = COCO(str(dataset / "annotations" / f"captions_{split}.json"))
        assert len(coco.getImgIds()) == {"train": 150, "val": 20, "test": 20}[split]
        for image_id in coco.getImgIds():
            captions = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(captions) == 5
            assert len({c["caption"] for c in captions}) == 5
            assert all(isinstance(c["caption"], str) and c["caption"] for c in captions)
        image_ids += coco.getImgIds()
        annotation_ids += list(coco.anns)
        data = load(dataset, split)
        assert data["licenses"] == [] and "info" in data
    assert len(image_ids) == len(set(image_ids)) == 190
    assert len(annotation_ids) == len(set(annotation_ids)) == 190 * 5


def test_instances_and_stuff_files_are_coco_files_of_every_pair_and_background(dataset):
    for split in synthetic.SPLITS:
        check_files(dataset, split, list(NOUNS.values())[1:], ["white", "gray", "beige", "light blue", "light green",
                                                               "pink"])


def test_object_masks_cover_pixels_of_the_objects_colour(dataset):
    """The mean colour inside each object's mask is its colour's, the background's outside every mask."""
    instances, stuff = load_coco(dataset, "instances_train"), load_coco(dataset, "stuff_train")
    for image_id in instances.getImgIds()[:40]:
        image = instances.imgs[image_id]
        pixels = np.asarray(Image.open(dataset / "images" / "train" / image["file_name"]), dtype=float)
        for annotation in instances.loadAnns(instances.getAnnIds(imgIds=image_id)):
            colour = instances.cats[annotation["category_id"]]["name"].split()[0]
            inside = pixels[instances.annToMask(annotation) == 1].mean(axis=0)
            # Colour jitter, noise and JPEG's blurred edges move it by at most about 27 per channel.
            assert np.abs(inside - easy.COLOURS[colour]).max() < 35, (image["file_name"], colour, inside)
        (background,) = stuff.loadAnns(stuff.getAnnIds(imgIds=image_id))
        mask = erode(stuff.annToMask(background) == 1, 2)  # clear of the shapes' blurred edges
        name = stuff.cats[background["category_id"]]["name"]
        assert np.abs(pixels[mask].mean(axis=0) - easy.BACKGROUNDS[name]).max() < 20, image["file_name"]


def test_synonyms_name_every_category_with_the_captions_words(dataset):
    comments, categories = synonym_lines(dataset)
    assert "synthetic_data.py" in comments[0]
    names = [category["name"] for category in read(dataset, "instances_train")["categories"]]
    assert [words[0] for words in categories] == names
    nouns = {shape: [noun for noun, named in NOUNS.items() if named == shape] for shape in NOUNS.values()}
    for words in categories:
        colour, shape = words[0].split()
        assert words == [f"{colour} {noun}" for noun in nouns[shape]], words


def test_old_version_set_is_regenerated(tmp_path):
    """A set written before the instances and stuff files existed (captions with objects, version 1) is rewritten."""
    synthetic.generate(tmp_path, n_train=3, n_val=1, n_test=1, seed=2)
    reference = all_files(tmp_path)
    for split in synthetic.SPLITS:
        data = load(tmp_path, split)
        data["info"]["parameters"]["generator_version"] = data["info"]["version"] = 1
        for image in data["images"]:
            image["objects"], image["background"] = [], "white"
        (tmp_path / "annotations" / f"captions_{split}.json").write_text(json.dumps(data))
        for kind in ("instances", "stuff"):
            (tmp_path / "annotations" / f"{kind}_{split}.json").unlink()
    synthetic.generate(tmp_path, n_train=3, n_val=1, n_test=1, seed=2)
    assert all_files(tmp_path) == reference


def test_missing_instances_file_makes_the_split_incomplete(tmp_path):
    synthetic.generate(tmp_path, n_train=3, n_val=1, n_test=1)
    reference = all_files(tmp_path)
    (tmp_path / "annotations" / "instances_val.json").unlink()
    (tmp_path / "annotations" / "stuff_test.json").write_text('{"info": {"contributor": "synthetic_data.py"}}')
    synthetic.generate(tmp_path, n_train=3, n_val=1, n_test=1)
    assert all_files(tmp_path) == reference


@pytest.mark.parametrize("name", ["captions_val.json", "instances_train.json", "stuff_test.json", "synonyms.txt"])
def test_a_file_another_program_wrote_is_refused_and_left_alone(tmp_path, name):
    synthetic.generate(tmp_path, n_train=2, n_val=1, n_test=1)
    foreign = tmp_path / "annotations" / name
    text = "# my own synonyms\nred circle, red ball\n" if name.endswith(".txt") else \
        '{"info": {"contributor": "someone else"}, "images": [], "annotations": []}'
    foreign.write_text(text)
    before = all_files(tmp_path)
    with pytest.raises(ValueError, match=f"{re.escape(str(foreign))} exists and was not written by the synthetic"):
        synthetic.generate(tmp_path, n_train=3, n_val=2, n_test=2, seed=7)
    assert all_files(tmp_path) == before


def test_image_files_exist_with_their_recorded_size(tmp_path):
    synthetic.generate(tmp_path, n_train=4, n_val=2, n_test=2, width=96, height=64)
    for split in synthetic.SPLITS:
        for image in load_scenes(tmp_path, split)["images"]:
            assert re.fullmatch(rf"synthetic_{split}_\d{{6}}\.jpg", image["file_name"])
            with Image.open(tmp_path / "images" / split / image["file_name"]) as picture:
                assert picture.format == "JPEG" and picture.mode == "RGB"
                assert picture.size == (image["width"], image["height"]) == (96, 64)
            for obj in image["objects"]:
                x, y, w, h = obj["bbox"]
                assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 64


def test_metadata_matches_the_pixels(dataset):
    """The colour at each shape's centre is nearest to its recorded colour; large shapes are clearly bigger."""
    palette = {name: np.array(rgb, dtype=float) for name, rgb in easy.COLOURS.items()}
    widths = {}
    for image in load_scenes(dataset, "train")["images"][:60]:
        pixels = np.asarray(Image.open(dataset / "images" / "train" / image["file_name"]), dtype=float)
        for obj in image["objects"]:
            x, y = (int(round(v)) for v in centre(obj))
            if obj["shape"] == "triangle":
                y += int(obj["bbox"][3] / 6)  # the box centre sits near a triangle's thin top half
            colour = pixels[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)
            nearest = min(palette, key=lambda name: np.abs(palette[name] - colour).sum())
            assert nearest == obj["colour"], (image["file_name"], obj)
            widths.setdefault((obj["shape"], obj["size"]), []).append(max(obj["bbox"][2], obj["bbox"][3]))
    for shape in ("circle", "square", "triangle", "star", "diamond", "cross"):
        assert min(widths[shape, "large"]) > 1.4 * max(widths[shape, "small"]), shape
        assert min(widths[shape, "small"]) >= 0.15 * 128  # still about ten pixels once downscaled to 64


def test_captions_follow_coco_style(dataset):
    captions = [a["caption"] for a in load(dataset, "train")["annotations"]]
    for caption in captions:
        assert caption[0].isupper(), caption
        assert re.fullmatch(r"[A-Z][a-z ,:]*[a-z]\.?", caption), caption
        assert not re.search(r"\ban [^aeiou]|\ba [aeiou]", caption.lower()), caption
    with_period = sum(c.endswith(".") for c in captions) / len(captions)
    assert 0.6 < with_period < 0.95


def test_captions_name_only_true_colours_shapes_sizes_and_counts(dataset):
    data = load_scenes(dataset, "train")
    captions = captions_by_image(data)
    for image in data["images"]:
        colours = {o["colour"] for o in image["objects"]}
        shapes = {o["shape"] for o in image["objects"]}
        count = len(image["objects"])
        mentioned = set()
        for caption in captions[image["id"]]:
            text = caption.lower().rstrip(".")
            for match in BACKGROUND_PHRASE.finditer(text):
                assert match.group(1) == image["background"], (caption, image["background"])
            words = BACKGROUND_PHRASE.sub("", text).replace(",", " ").replace(":", " ").split()
            named_colours = {w for w in words if w in COLOURS}
            assert named_colours <= colours, (caption, image["objects"])
            mentioned |= named_colours
            named_shapes = {NOUNS.get(w) or PLURALS.get(w) for w in words if w in NOUNS or w in PLURALS}
            assert named_shapes <= shapes, (caption, image["objects"])
            for size, colour, noun in re.findall(NOUN_PHRASE, text):
                obj = find(image, colour, noun)
                assert not size or SIZE_WORDS[size] == obj["size"], (caption, obj)
            if "three" in words:
                assert count == 3, caption
            if "two" in words or "pair" in words:
                assert count >= 2, caption
            if "single" in words or "only" in words or "just" in words:
                assert count == 1, caption
        assert mentioned == colours, (captions[image["id"]], image["objects"])


def test_spatial_words_agree_with_positions(dataset):
    data = load_scenes(dataset, "train")
    width, height = 128, 128
    captions = captions_by_image(data)
    checked = {"relation": 0, "place": 0, "arrangement": 0, "order": 0}
    for image in data["images"]:
        for caption in captions[image["id"]]:
            text = caption.lower().rstrip(".")
            relations = [(m.group(2, 3), m.group(4), m.group(6, 7)) for m in RELATION.finditer(text)]
            # "A with B to its left" states that B is to the left of A.
            relations += [(m.group(5, 6), m.group(7).replace("to its", "to the").replace(" it", "")
                           .replace("to the left", "to the left of").replace("to the right", "to the right of"),
                           m.group(2, 3)) for m in WITH_IT.finditer(text)]
            for subject, relation, other in relations:
                (ax, ay), (bx, by) = centre(find(image, *subject)), centre(find(image, *other))
                expected = {"to the left of": bx - ax > 0.15 * width, "to the right of": ax - bx > 0.15 * width,
                            "above": by - ay > 0.15 * height, "over": by - ay > 0.15 * height,
                            "below": ay - by > 0.15 * height, "under": ay - by > 0.15 * height,
                            "beneath": ay - by > 0.15 * height,
                            "next to": abs(ax - bx) > 0.15 * width and abs(ay - by) < 0.15 * height,
                            "beside": abs(ax - bx) > 0.15 * width and abs(ay - by) < 0.15 * height}[relation]
                assert expected, (caption, image["objects"])
                checked["relation"] += 1
            for match in PLACE.finditer(text):
                x, y = centre(find(image, *match.group(2, 3)))
                phrase = match.group(4)
                row = "top" if re.search("top|upper", phrase) else "bottom" if re.search("bottom|lower", phrase) \
                    else "middle"
                column = "left" if "left" in phrase else "right" if "right" in phrase else "middle"
                assert {"top": y < height / 3, "middle": height / 3 < y < 2 * height / 3,
                        "bottom": y > 2 * height / 3}[row], (caption, image["objects"])
                assert {"left": x < width / 3, "middle": width / 3 < x < 2 * width / 3,
                        "right": x > 2 * width / 3}[column], (caption, image["objects"])
                checked["place"] += 1
            for match in SIDE_BY_SIDE.finditer(text):
                (ax, ay), (bx, by) = centre(find(image, *match.group(2, 3))), centre(find(image, *match.group(5, 6)))
                horizontal, vertical = abs(ax - bx) / width, abs(ay - by) / height
                if match.group(7) == "side by side":
                    assert horizontal > 0.15 and vertical < 0.15, (caption, image["objects"])
                else:
                    assert vertical > 0.15 and horizontal < 0.15, (caption, image["objects"])
                checked["arrangement"] += 1
            if text.startswith("from left to right"):
                xs = [centre(find(image, colour, noun))[0] for _, colour, noun in re.findall(NOUN_PHRASE, text)]
                assert len(xs) == len(image["objects"]) and xs == sorted(xs), (caption, image["objects"])
                checked["order"] += 1
    # Enough of each kind was parsed for the checks above to mean something.
    assert checked["relation"] >= 50 and checked["place"] >= 50, checked
    assert checked["arrangement"] >= 3 and checked["order"] >= 3, checked


def test_rerun_with_same_parameters_does_nothing(tmp_path, capsys):
    synthetic.generate(tmp_path, n_train=6, n_val=2, n_test=2)
    before = mtimes(tmp_path)
    time.sleep(0.01)
    synthetic.generate(tmp_path, n_train=6, n_val=2, n_test=2, verbose=True)
    assert mtimes(tmp_path) == before
    output = capsys.readouterr().out
    assert output.count("already complete") == 3


def test_rerun_with_other_parameters_regenerates_only_that_split(tmp_path):
    synthetic.generate(tmp_path, n_train=6, n_val=5, n_test=2)
    before = mtimes(tmp_path)
    synthetic.generate(tmp_path, n_train=6, n_val=3, n_test=2)
    after = mtimes(tmp_path)
    assert {k: v for k, v in after.items() if "val" not in k} == {k: v for k, v in before.items() if "val" not in k}
    assert after["annotations/captions_val.json"] != before["annotations/captions_val.json"]
    assert sorted(p.name for p in (tmp_path / "images" / "val").iterdir()) == [
        "synthetic_val_000001.jpg", "synthetic_val_000002.jpg", "synthetic_val_000003.jpg"]
    assert load(tmp_path, "val")["info"]["parameters"]["count"] == 3


def test_interrupted_run_leaves_no_annotation_file_and_rerun_completes(tmp_path, monkeypatch):
    synthetic.generate(tmp_path / "reference", n_train=5, n_val=2, n_test=2, seed=4)
    synthetic.generate(tmp_path / "out", n_train=3, n_val=2, n_test=2, seed=4)
    draw = easy.draw_scene
    calls = []

    def failing_draw(rng, scene):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return draw(rng, scene)

    monkeypatch.setattr(easy, "draw_scene", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "out", n_train=5, n_val=2, n_test=2, seed=4)
    # The old train annotations went first: nothing vouches for the half-rewritten train images.
    for name in ("captions_train.json", "instances_train.json", "stuff_train.json"):
        assert not (tmp_path / "out" / "annotations" / name).exists(), name
    monkeypatch.setattr(easy, "draw_scene", draw)
    synthetic.generate(tmp_path / "out", n_train=5, n_val=2, n_test=2, seed=4)
    assert all_files(tmp_path / "out") == all_files(tmp_path / "reference")


def test_deleted_image_makes_the_split_incomplete(tmp_path):
    synthetic.generate(tmp_path, n_train=3, n_val=2, n_test=2)
    (tmp_path / "images" / "test" / "synthetic_test_000002.jpg").unlink()
    synthetic.generate(tmp_path, n_train=3, n_val=2, n_test=2)
    assert (tmp_path / "images" / "test" / "synthetic_test_000002.jpg").is_file()


def test_command_line_runs_and_reports_each_split(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--train", "3", "--val", "2", "--test", "1", "--seed", "2",
                              "--width", "80", "--height", "60"])
    assert synthetic.run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "val", "test"]
    assert load(tmp_path, "test")["info"]["parameters"] == {
        "split": "test", "count": 1, "seed": 2, "width": 80, "height": 60,
        "generator_version": easy.GENERATOR_VERSION, "jpeg_quality": 90}


@pytest.mark.parametrize("flags", [["--width", "8"], ["--train", "-1"], ["--seed", "-3"], ["--height", "big"]])
def test_command_line_rejects_bad_values(tmp_path, flags, capsys):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(tmp_path), *flags])
    assert flags[0] in capsys.readouterr().err


def test_generate_rejects_bad_values_in_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="width must be between 32 and 4096, got 10"):
        synthetic.generate(tmp_path, width=10)
    assert not (tmp_path / "annotations").exists()


def test_unwritable_output_is_reported(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    assert synthetic.run(parser.parse_args(["--out", str(blocker), "--train", "1", "--val", "1",
                                                 "--test", "1"])) == 1
    assert "--out" in capsys.readouterr().err


def test_shape_words_are_every_noun_and_plural_the_captions_use():
    words = synthetic.shape_words()  # the hard variety's names too
    assert {**NOUNS, **PLURALS}.items() <= words.items()
    from prepare.synthetic import hard
    assert {noun: shape for shape, nouns in hard.SHAPE_NOUNS.items() for noun in nouns}.items() <= words.items()
