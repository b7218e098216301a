"""Tests for the object-level score: the pairs read from captions, the counts, and evaluate's report of them."""
import json
from collections import Counter

import pytest

import evaluate
import objects


@pytest.mark.parametrize("caption, expected", [
    ("A red circle on a white background.", {("red", "circle"): 1}),
    ("Two red circles.", {("red", "circle"): 2}),
    ("a red circle and a blue square", {("red", "circle"): 1, ("blue", "square"): 1}),
    ("A small red disk above a big blue star", {("red", "circle"): 1, ("blue", "star"): 1}),
    ("three little green crosses", {("green", "cross"): 3}),
    ("a pair of teal diamonds", {("teal", "diamond"): 2}),
    ("pink triangles on a pink background", {("pink", "triangle"): 2}),  # a bare plural is at least two
    ("Two red shapes, a circle and a square", {("red", "circle"): 1, ("red", "square"): 1}),
    ("two circles, one red and one blue", {("red", "circle"): 1, ("blue", "circle"): 1}),
    ("Two red shapes and a blue star", {("blue", "star"): 1}),  # the red ones' shapes are not said
    ("two crosses and a pink diamond", {("pink", "diamond"): 1}),
    ("the red circle is to the left of the red circle", {("red", "circle"): 1}),  # one object named twice
    ("a light blue background with a teal square", {("teal", "square"): 1}),
    ("there are three shapes on a beige background", {}),
])
def test_named_objects(caption, expected):
    assert objects.named_objects(caption) == Counter(expected)


def test_precision_and_recall_are_micro_averaged_with_counts():
    image_a = Counter({("red", "circle"): 2, ("blue", "square"): 1})
    image_b = Counter({("green", "star"): 1})
    score = objects.score_captions(
        {1: "three red circles and a blue square", 2: "a green star next to a black cross"},
        {1: image_a, 2: image_b})
    # Named: 3 red circles (2 there) + 1 blue square + 1 green star + 1 black cross = 6, of which 4 are there.
    assert (score.named, score.matched, score.objects) == (6, 4, 4)
    assert score.precision == pytest.approx(4 / 6) and score.recall == pytest.approx(1.0)
    # The black cross: neither its colour nor its shape is in image 2.
    assert score.to_dict()["colour_precision"] == pytest.approx(5 / 6)
    assert score.to_dict()["shape_precision"] == pytest.approx(5 / 6)


def test_wrong_shape_right_colour_is_counted_apart():
    score = objects.score_captions({1: "a red triangle"}, {1: Counter({("red", "circle"): 1})})
    assert score.precision == 0 and score.recall == 0
    assert score.to_dict()["colour_precision"] == 1 and score.to_dict()["shape_precision"] == 0


def test_nothing_named_has_no_precision():
    score = objects.score_captions({1: "a picture"}, {1: Counter({("red", "circle"): 1})})
    assert score.precision is None and score.recall == 0


def test_human_references_name_what_is_there(synthetic_dir):
    data = json.loads((synthetic_dir / "annotations" / "captions_train.json").read_text())
    found = objects.split_objects({image["id"]: image for image in data["images"]})
    score = objects.ObjectScore()
    for annotation in data["annotations"]:
        score.add(objects.named_objects(annotation["caption"]), found[annotation["image_id"]])
    assert score.captions == 5 * len(data["images"]) and score.named > score.captions
    assert score.precision >= 0.95 and score.recall >= 0.8


def test_split_without_objects_has_no_report():
    images = {1: {"id": 1, "file_name": "a.jpg"}}
    assert objects.split_report(images, {1: ["a red circle"]}, {1: "a red circle"}) is None


def test_evaluate_reports_object_scores_beside_cider(trained_checkpoint, synthetic_dir, capsys):
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "val", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    scores = report["objects"]
    assert scores["model"]["captions"] == scores["human"]["captions"] == report["images"]
    assert scores["human"]["precision"] >= 0.95  # the ceiling: one true human caption per image
    assert scores["model"]["objects"] == scores["human"]["objects"] > 0
    assert "objects" in captured.err and "precision" in captured.err and "recall" in captured.err
    assert report["bad_endings"]["human"] == 0 and 0 <= report["bad_endings"]["model"] <= 1  # every reference ends
    assert "cut off" in captured.err
    import viz  # notebook 3's table says it too
    assert "Captions cut off" in viz.metrics_markdown(report)
