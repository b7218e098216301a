"""Tests for the object scores (objects.py): the categories read from captions with a set's words, the counts,
precision, recall and CHAIR from COCO instance files, and evaluate's report of them on synthetic and COCO splits."""
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import evaluate
from captioning import objects
from object_sets import write_object_set

# The wording of the synthetic sets, as their synonyms.txt lists it (a few colours and nouns).
_SHAPES = {"circle": ["circle", "disk", "disc", "dot"], "square": ["square", "box", "block"],
           "triangle": ["triangle"], "star": ["star"], "diamond": ["diamond", "rhombus"], "cross": ["cross", "plus"]}
SHAPES = objects.Vocabulary.of({f"{colour} {noun}": f"{colour} {shape}" for colour in
                                ("red", "green", "blue", "teal", "pink", "black") for shape, nouns in _SHAPES.items()
                                for noun in nouns})


@pytest.mark.parametrize("caption, expected", [
    ("A red circle on a white background.", {"red circle": 1}),
    ("Two red circles.", {"red circle": 2}),
    ("a red circle and a blue square", {"red circle": 1, "blue square": 1}),
    ("A small red disk above a big blue star", {"red circle": 1, "blue star": 1}),
    ("three little green crosses", {"green cross": 3}),
    ("two red boxes and three blue pluses", {"red square": 2, "blue cross": 3}),
    ("a pair of teal diamonds", {"teal diamond": 2}),
    ("a trio of small pink stars", {"pink star": 3}),
    ("pink triangles on a pink background", {"pink triangle": 2}),  # a bare plural is at least two
    ("Two red shapes, a circle and a square", {"red circle": 1, "red square": 1}),
    ("two circles, one red and one blue", {"red circle": 1, "blue circle": 1}),
    ("Two red shapes and a blue star", {"blue star": 1}),  # the red ones' shapes are not said
    ("two crosses and a pink diamond", {"pink diamond": 1}),
    ("the red circle is to the left of the red circle", {"red circle": 1}),  # one object named twice
    ("a light blue background with a teal square", {"teal square": 1}),
    ("there are three shapes on a beige background", {}),
])
def test_named_objects(caption, expected):
    assert objects.named_objects(caption, SHAPES) == Counter(expected)


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
def test_coco_mentions_follow_the_chair_papers_list(caption, expected):
    vocabulary = objects.coco_vocabulary()
    assert [mention.category for mention in objects.mentions(objects.tokens_of(caption), vocabulary)] == expected


def test_the_coco_synonym_list_is_the_papers():
    table = objects.read_synonyms(objects.COCO_SYNONYMS)
    assert len(set(table.values())) == 80
    assert table["puppy"] == "dog" and table["sofa"] == "couch" and table["motor bike"] == "motorcycle"
    assert table["cheesecake"] == "cake" and table["iphone"] == "cell phone"  # stray spaces, capitals


def _image(counts: dict, crowds=()) -> objects.ImageObjects:
    return objects.ImageObjects(Counter(counts), set(crowds))


def test_precision_and_recall_are_micro_averaged_with_counts():
    image_a = _image({"red circle": 2, "blue square": 1})
    image_b = _image({"green star": 1})
    score = objects.score_captions(
        {1: "three red circles and a blue square", 2: "a green star next to a black cross"},
        {1: image_a, 2: image_b}, SHAPES)
    # Named: 3 red circles (2 there) + 1 blue square + 1 green star + 1 black cross = 6, of which 4 are there.
    assert (score.named, score.matched, score.objects, score.found) == (6, 4, 4, 4)
    assert score.precision == pytest.approx(4 / 6) and score.recall == pytest.approx(1.0)
    # CHAIR counts mentions: 4, of which the black cross is not in its image; one caption of two has it.
    assert score.to_dict()["CHAIRi"] == pytest.approx(1 / 4) and score.to_dict()["CHAIRs"] == pytest.approx(1 / 2)


def test_a_crowd_stands_for_any_number_and_counts_one_object():
    score = objects.score_captions({1: "three dogs"}, {1: _image({}, ["dog"])}, objects.Vocabulary.of({"dog": "dog"}))
    assert (score.named, score.matched, score.objects, score.found) == (3, 3, 1, 1)


def test_nothing_named_has_no_precision():
    score = objects.score_captions({1: "a picture"}, {1: _image({"red circle": 1})}, SHAPES)
    assert score.precision is None and score.recall == 0 and score.to_dict()["CHAIRi"] is None


def test_the_words_of_a_set_come_from_its_list_then_coco_then_the_names(tmp_path):
    (tmp_path / "synonyms.txt").write_text("# ours\nred car, red automobile, scarlet car\ndog, puppy, hound\n")
    vocabulary = objects.vocabulary_for(["dog", "red car", "zebra"], tmp_path)
    assert objects.named_objects("a scarlet car and two hounds and a zebra", vocabulary) == \
        Counter({"red car": 1, "dog": 2, "zebra": 1})  # zebra: not in the list, named by its name
    assert objects.vocabulary_for(["dog", "cat"], tmp_path / "none") is objects.coco_vocabulary()
    own = objects.vocabulary_for(["dog", "red car"], tmp_path / "none")
    assert objects.named_objects("a puppy and red cars", own) == Counter({"red car": 2})
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.txt is not UTF-8"):
        objects.read_synonyms(tmp_path / "binary.txt")


def test_a_coco_format_set_of_another_program_is_scored_from_its_files(tmp_path):
    data = write_object_set(tmp_path)
    references = {image_id: texts for image_id, texts in
                  {1: ["a dog"], 2: ["two red cars and a dog"], 3: ["grass"], 4: ["dogs"]}.items()}
    captions = {1: "a dog on the grass", 2: "a red car and a zebra", 3: "a dog", 4: "many dogs"}
    report = objects.split_report(data, "test", references, captions)
    model = report["model"]
    # Named: dog | red car, zebra | dog | dogs (2, a crowd) = 6; in the images: 1 + 1 + 0 + 2 = 4.
    # Objects: 1 + 3 + 0 + 1 (the crowd) = 5, of which 1 + 1 + 0 + 1 are named.
    assert (model["named"], model["matched"], model["objects"], model["found"]) == (6, 4, 5, 3)
    assert (model["mentions"], model["hallucinated_mentions"], model["hallucinated_captions"]) == (5, 2, 2)
    assert report["human"]["precision"] == 1.0 and report["human"]["recall"] == pytest.approx(5 / 5)
    (tmp_path / "annotations" / "instances_test.json").unlink()
    assert objects.split_report(data, "test", references, captions) is None


def test_human_references_of_the_synthetic_set_name_what_is_there(synthetic_dir):
    read = objects.split_objects(synthetic_dir, "train")
    found, vocabulary = read
    data = json.loads((synthetic_dir / "annotations" / "captions_train.json").read_text())
    score = objects.ObjectScore()
    for annotation in data["annotations"]:
        score.add(objects.named_objects(annotation["caption"], vocabulary), found[annotation["image_id"]])
    assert score.captions == 5 * len(data["images"]) and score.named > score.captions
    assert score.precision >= 0.95 and score.recall >= 0.8


def test_evaluate_reports_object_scores_beside_cider(trained_checkpoint, synthetic_dir, capsys):
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "val", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    scores = report["objects"]
    assert scores["model"]["captions"] == scores["human"]["captions"] == report["images"]
    assert scores["human"]["precision"] >= 0.95  # the ceiling: one true human caption per image
    assert scores["model"]["objects"] == scores["human"]["objects"] > 0
    for word in ("objects", "precision", "recall", "CHAIRi", "CHAIRs", "cut off"):
        assert word in captured.err
    assert report["bad_endings"]["human"] == 0 and 0 <= report["bad_endings"]["model"] <= 1  # every reference ends
    from captioning import tables  # notebook 3's table says it too
    assert ("Captions cut off" in tables.metrics_markdown(report)) == (report["bad_endings"]["model"] > 0)
    report["bad_endings"]["model"] = 0.25  # said only when the model cuts captions off
    assert "Captions cut off (ending on 'a', 'on', 'and'...): 25.0%" in tables.metrics_markdown(report)


# ------------------------------------------------------------------------------------- COCO splits (CHAIR)


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
    box = {"bbox": [0, 0, 8, 8], "iscrowd": 0}
    instances = {"images": [{"id": i} for i in (1, 2, 3)],
                 "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                                {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **box},
                                 {"id": 2, "image_id": 1, "category_id": 18, **box},
                                 {"id": 3, "image_id": 2, "category_id": 3, **box},
                                 {"id": 4, "image_id": 3, "category_id": 17, **box}]}
    (annotations / "instances_val2014.json").write_text(json.dumps(instances))


class _FixedCaptioner:
    """Stands in for a trained model: the same captions for the split, whatever the images."""

    config = SimpleNamespace(train_split="train", data_dir="")

    def __init__(self, captions: dict[int, str]):
        self.captions = captions

    def caption_split(self, *args, **kwargs):
        return dict(self.captions), []


def test_evaluate_reports_chair_on_a_coco_split_from_the_same_code(tmp_path):
    _write_coco(tmp_path)
    captioner = _FixedCaptioner({1: "a man and a dog on a bench", 2: "a car next to a bench", 3: "a dog on a couch"})
    report = evaluate.evaluate(None, tmp_path, "val2014", captioner=captioner, progress=False)
    model = report["objects"]["model"]
    # person, dog, bench | car, bench | dog, couch: the bench of image 2 is in a reference, so only the bench of
    # image 1, the dog and the couch of image 3 are not in their images (its bed would be: a reference has one).
    assert (model["mentions"], model["hallucinated_mentions"], model["hallucinated_captions"]) == (7, 3, 2)
    assert model["CHAIRi"] == pytest.approx(3 / 7) and model["CHAIRs"] == pytest.approx(2 / 3)
    # Precision reads the instances alone: 3 of the 7 named objects are annotated (person, dog, car).
    assert model["precision"] == pytest.approx(3 / 7) and model["recall"] == pytest.approx(3 / 4)
    # The first reference of each image, against the instances and the other references: none is wrong.
    assert report["objects"]["human"]["CHAIRi"] == 0 and report["objects"]["human"]["mentions"] == 4
    table = evaluate.format_table(report)
    assert "CHAIRi" in table and "CHAIRs" in table and "0.429" in table


def test_no_object_scores_without_instance_annotations(tmp_path):
    _write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2014.json").unlink()
    report = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)
    assert report["objects"] is None and "CHAIR" not in evaluate.format_table(report)


def test_karpathy_style_split_reads_the_instances_of_its_image_folders(tmp_path):
    _write_coco(tmp_path, folder_names=True)
    report = evaluate.evaluate(None, tmp_path, "karpathy_test", captioner=_FixedCaptioner({3: "a cat on a dog"}),
                               progress=False)
    assert report["objects"]["model"]["hallucinated_mentions"] == 1


def test_a_damaged_instance_file_is_a_clear_error(tmp_path):
    _write_coco(tmp_path)
    (tmp_path / "annotations" / "instances_val2014.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="instances_val2014.json is not a COCO instances file"):
        evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)
    (tmp_path / "annotations" / "instances_val2014.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="instances_val2014.json"):
        evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)


def test_evaluate_takes_a_synonym_list(tmp_path, capsys):
    _write_coco(tmp_path)
    (tmp_path / "mine.txt").write_text("cat, moggy\nperson, man\ndog\ncar\n")
    report = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({3: "a moggy"}), progress=False,
                               synonyms=tmp_path / "mine.txt")
    assert report["objects"]["model"]["precision"] == 1.0
    with pytest.raises(FileNotFoundError):
        evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({3: "a cat"}), progress=False,
                          synonyms=tmp_path / "missing.txt")


def test_a_second_evaluation_of_the_same_images_reuses_the_baseline(tmp_path, monkeypatch):
    _write_coco(tmp_path)
    first = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a dog"}), progress=False)
    monkeypatch.setattr(evaluate.metrics, "best_constant_caption",
                        lambda *args, **kwargs: pytest.fail("the baseline was chosen again"))
    second = evaluate.evaluate(None, tmp_path, "val2014", captioner=_FixedCaptioner({1: "a cat"}), progress=False,
                               baseline=first["baseline"])
    assert second["baseline"] == first["baseline"]
    assert second["cider_vs_baseline"] == second["model"]["CIDEr"] / max(first["baseline"]["CIDEr"], 1e-9)
