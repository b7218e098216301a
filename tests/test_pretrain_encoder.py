"""The encoder probe: labels come from the synthetic annotations, and it reports accuracies per epoch."""
from __future__ import annotations

import json

import pytest
import torch

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


class _Oracle(torch.nn.Module):
    """Scores each image's true labels high (the image's first pixel says which row it is), or, inverted, low."""

    def __init__(self, labels: torch.Tensor, inverted: bool = False) -> None:
        super().__init__()
        self.labels, self.sign = labels, -1.0 if inverted else 1.0

    def forward(self, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        return self.sign * (self.labels[images[:, 0, 0, 0].long()] * 10 - 5)


def test_accuracy_is_one_for_a_perfect_model_and_zero_for_a_perverse_one(synthetic_dir):
    _, labels, counts = probe_encoder.load_split(synthetic_dir, "val", 32)
    images = torch.zeros(len(labels), 3, 4, 4)
    images[:, 0, 0, 0] = torch.arange(len(labels)).float()
    cpu = torch.device("cpu")
    assert probe_encoder.accuracy(_Oracle(labels), images, labels, counts, cpu) == \
        {"colour": 1.0, "shape": 1.0, "exact": 1.0}
    wrong = probe_encoder.accuracy(_Oracle(labels, inverted=True), images, labels, counts, cpu)
    assert wrong["colour"] == wrong["shape"] == wrong["exact"] == 0.0


def test_probe_refuses_data_without_object_lists(synthetic_dir, tmp_path):
    (tmp_path / "annotations").mkdir()
    annotations = json.loads(annotation_path(synthetic_dir, "train").read_text())
    for image in annotations["images"]:
        del image["objects"]
    annotation_path(tmp_path, "train").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="object lists"):
        probe_encoder.load_split(tmp_path, "train", 32)
