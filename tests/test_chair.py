"""Tests for CHAIR on COCO: object words in captions, instance annotations, and evaluate's report on a small
COCO-format split written by the test."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import chair
import evaluate


@pytest.mark.parametrize("caption, expected", [
    ("A man riding a horse.", ["person", "horse"]),
    ("Two women and their puppies on a couch", ["person", "dog", "couch"]),
    ("people standing next to buses", ["person", "bus"]),
    ("a baby elephant beside an adult giraffe", ["elephant", "giraffe"]),  # no person in "baby", "adult"
    ("a teddy bear holding a hot dog", ["teddy bear", "hot dog"]),  # no bear, no dog
    ("wine glasses on a dining table", ["wine glass", "dining table"]),
    ("a toilet with its seat up", ["toilet"]),  # a toilet's seat is no chair
    ("a boy on a motor bike", ["person", "motorcycle"]),
    ("knives and forks next to a pair of scissors", ["knife", "fork", "scissors"]),
    ("a cat on the skis", ["cat", "skis"]),
    ("an empty street at night", []),
])
def test_caption_objects(caption, expected):
    assert chair.caption_objects(caption) == expected


def test_the_synonym_list_is_the_papers():
    table = chair.synonyms()
    assert len(set(table.values())) == 80
    assert table["puppy"] == "dog" and table["sofa"] == "couch" and table["motor bike"] == "motorcycle"
    assert table["cheesecake"] == "cake" and table["iphone"] == "cell phone"  # stray spaces, capitals


def test_chair_counts_mentions_and_captions():
    truth = {1: {"person", "dog"}, 2: {"car"}, 3: {"cat"}}
    scores = chair.chair_scores({1: "a man and a dog on a bench", 2: "a car and a truck and a bus",
                                 3: "a cat"}, truth)
    # Mentions: person, dog, bench | car, truck, bus | cat -> 7, of which bench, truck and bus are not there.
    assert (scores["mentions"], scores["hallucinated_mentions"], scores["hallucinated_captions"]) == (7, 3, 2)
    assert scores["CHAIRi"] == pytest.approx(3 / 7) and scores["CHAIRs"] == pytest.approx(2 / 3)


def _write_coco(data_dir: Path, folder_names: bool = False) -> None:
    """A COCO-format val2014 split of three images with instance annotations (and a train split's captions)."""
    annotations = data_dir / "annotations"
    annotations.mkdir(parents=True)
    prefix = "val2014/" if folder_names else ""
    images = [{"id": i, "file_name": f"{prefix}COCO_val2014_{i:012d}.jpg", "width": 64, "height": 64}
              for i in (1, 2, 3)]
    captions = {1: ["A man walking his dog.", "a person and a dog", "a man with a dog on a leash"],
                2: ["a red car parked by the road", "a car on a street", "a car near a bench"],
                3: ["a cat asleep", "a kitten on a bed", "a cat lying down"]}
    records = [{"id": 10 * i + k, "image_id": i, "caption": text} for i, texts in captions.items()
               for k, text in enumerate(texts)]
    split = {"images": images, "annotations": records}
    (annotations / ("captions_karpathy_test.json" if folder_names else "captions_val2014.json")).write_text(
        json.dumps(split))
    (annotations / "captions_train.json").write_text(json.dumps(split))
    instances = {"images": [{"id": i} for i in (1, 2, 3)],
                 "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                                {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 18},
                                 {"id": 3, "image_id": 2, "category_id": 3}, {"id": 4, "image_id": 3, "category_id": 17}]}
    (annotations / "instances_val2014.json").write_text(json.dumps(instances))


class _FixedCaptioner:
    """Stands in for a trained model: the same captions for the split, whatever the images."""

    config = SimpleNamespace(train_split="train", data_dir="")

    def __init__(self, captions: dict[int, str]):
        self.captions = captions

    def caption_split(self, *args, **kwargs):
        return dict(self.captions), []


def test_evaluate_reports_chair_on_a_coco_split(tmp_path):
    _write_coco(tmp_path)
    captioner = _FixedCaptioner({1: "a man and a dog on a bench", 2: "a car next to a bench", 3: "a dog on a couch"})
    report = evaluate.evaluate(None, tmp_path, "val2014", captioner=captioner, progress=False)
    model = report["chair"]["model"]
    # person, dog, bench | car, bench | dog, couch: the bench of image 2 is in a reference, so only the bench of
    # image 1, the dog and the couch of image 3 are not in their images (its bed would be: a reference has one).
    assert (model["mentions"], model["hallucinated_mentions"], model["hallucinated_captions"]) == (7, 3, 2)
    assert model["CHAIRi"] == pytest.approx(3 / 7) and model["CHAIRs"] == pytest.approx(2 / 3)
    # The first reference of each image, against the instances and the other references: none is wrong.
    assert report["chair"]["human"]["CHAIRi"] == 0 and report["chair"]["human"]["mentions"] == 4
    assert report["objects"] is None  # not a synthetic split
    table = evaluate.format_table(report)
    assert "CHAIRi" in table and "CHAIRs" in table and "0.429" in table


def test_no_chair_without_instance_annotations(tmp_path):
    _write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2014.json").unlink()
    report = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)
    assert report["chair"] is None and "CHAIR" not in evaluate.format_table(report)


def test_karpathy_style_split_reads_the_instances_of_its_image_folders(tmp_path):
    _write_coco(tmp_path, folder_names=True)
    report = evaluate.evaluate(None, tmp_path, "karpathy_test", captioner=_FixedCaptioner({3: "a cat on a dog"}),
                               progress=False)
    assert report["chair"]["model"]["hallucinated_mentions"] == 1
    images = ["val2014/a.jpg", "train2014/b.jpg"]
    assert chair.instance_files(tmp_path / "annotations", "karpathy_test", images) is None  # train2014's missing
    assert chair.instance_files(tmp_path / "annotations", "karpathy_test", images[:1]) == [
        tmp_path / "annotations" / "instances_val2014.json"]


def test_a_damaged_instance_file_is_a_clear_error(tmp_path):
    _write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2014.json").write_text("{}")
    with pytest.raises(ValueError, match="instances_val2014.json is not a COCO instance annotation file"):
        evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)


def test_a_second_evaluation_of_the_same_images_reuses_the_baseline(tmp_path, monkeypatch):
    _write_coco(tmp_path)
    first = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)
    monkeypatch.setattr(evaluate.metrics, "best_constant_caption",
                        lambda *args, **kwargs: pytest.fail("the baseline was chosen again"))
    second = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a cat"}), progress=False,
                               baseline=first["baseline"])
    assert second["baseline"] == first["baseline"]
    assert second["cider_vs_baseline"] == second["model"]["CIDEr"] / max(first["baseline"]["CIDEr"], 1e-9)
