"""The encoder probe: labels come from the synthetic annotations, and it reports accuracies per epoch."""
from __future__ import annotations

import json

import pytest

import probe_encoder
from annotations import annotation_path


def test_labels_are_the_colours_and_shapes_of_each_image(synthetic_dir):
    images, labels, counts = probe_encoder.load_split(synthetic_dir, "val", 32)
    annotations = json.loads(annotation_path(synthetic_dir, "val").read_text())["images"]
    assert images.shape == (len(annotations), 3, 32, 32) and labels.shape == (len(annotations), 16)
    for row, image in enumerate(annotations):
        named = {probe_encoder.LABELS[index] for index in labels[row].nonzero().flatten().tolist()}
        assert named == {o["colour"] for o in image["objects"]} | {o["shape"] for o in image["objects"]}
        assert counts[row] == len(image["objects"])


def test_probe_reports_accuracies_for_every_epoch(synthetic_dir, one_thread):
    reports = probe_encoder.probe(synthetic_dir, 32, epochs=2, backbone="resnet18", batch_size=8)
    assert [report["epoch"] for report in reports] == [1, 2]
    for report in reports:
        assert all(0.0 <= report[key] <= 1.0 for key in ("colour", "shape", "exact"))


def test_probe_refuses_data_without_object_lists(synthetic_dir, tmp_path):
    (tmp_path / "annotations").mkdir()
    annotations = json.loads(annotation_path(synthetic_dir, "train").read_text())
    for image in annotations["images"]:
        del image["objects"]
    annotation_path(tmp_path, "train").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="object lists"):
        probe_encoder.load_split(tmp_path, "train", 32)
