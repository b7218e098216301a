"""Pretraining the CNN on the synthetic objects: labels from the annotations, reports per epoch, weights that
train.py loads like ImageNet weights, and the recipe's pretraining stage."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import pretrain_encoder
import synthetic_data
import train
from annotations import annotation_path, image_path
from data_loader import Preprocess, load_image
from checkpoint import build_models, load_checkpoint
from conftest import tiny_config
from model import layer3_side, load_backbone


def test_labels_are_the_colours_shapes_and_pairs_of_each_image(synthetic_dir):
    images = pretrain_encoder.split_images(synthetic_dir, "val")
    labels = pretrain_encoder.Labels(pretrain_encoder.split_images(synthetic_dir, "train"))
    pixels, targets, counts = pretrain_encoder.load_split(synthetic_dir, "val", images, labels, 32)
    assert pixels.shape == (len(images), 3, 32, 32) and targets.shape == (len(images), len(labels.names))
    assert len(labels.names) == (len(labels.backgrounds) + len(labels.colours)
                                 + len(labels.shapes) * (1 + len(labels.colours)))
    assert labels.backgrounds and labels.names[labels.span("pairs")][0] == f"{labels.colours[0]} {labels.shapes[0]}"
    for row, image in enumerate(images):
        named = {labels.names[index] for index in targets[row].nonzero().flatten().tolist()}
        expected = {f"{image['background']} background"} | {
            name for o in image["objects"] for name in (o["colour"], o["shape"], f"{o['colour']} {o['shape']}")}
        assert named == expected & set(labels.names)
        assert counts[row] == len(image["objects"])


def test_object_maps_show_each_object_where_the_cnn_sees_it(tmp_path):
    """Redrawn from their boxes on images of varied size and aspect ratio (the hard set), resized and cropped as the
    CNN sees them: inside each object of the map, the image shows that object's colour."""
    synthetic_data.generate(tmp_path, n_train=12, n_val=1, n_test=0, seed=3, variety="hard")
    images = pretrain_encoder.split_images(tmp_path, "train")
    labels = pretrain_encoder.Labels(images)
    pairs = labels.names[labels.span("pairs")]
    transform = Preprocess(64, 72)
    assert len({(image["width"], image["height"]) for image in images}) > 3
    checked = 0
    for image in images:
        maps = pretrain_encoder.object_map(image, labels, 64, 72)
        assert maps.shape == (64, 64)
        pixels = transform(load_image(image_path(tmp_path, "train", image["file_name"]))) / transform.inv_std \
            + transform.mean  # (3, 64, 64) on the 0..255 scale
        grown = F.max_pool2d(maps[None, None].float(), 5, 1, 2)[0, 0]
        shrunk = -F.max_pool2d(-maps[None, None].float(), 5, 1, 2)[0, 0]
        inside = (grown == shrunk) & (maps > 0)  # 5 x 5 of one object: away from its darker outline
        for value in maps[inside].unique().tolist():
            colour = pairs[value - 1].split()[0]
            seen = pixels[:, inside & (maps == value)].mean(1)
            assert (seen - torch.tensor(synthetic_data.COLOURS[colour])).abs().max() < 30, (image, colour, seen)
            checked += 1
    assert checked >= 10


def test_cell_targets_are_the_share_of_each_cell_each_pair_covers(synthetic_dir):
    images = pretrain_encoder.split_images(synthetic_dir, "val")
    labels = pretrain_encoder.Labels(pretrain_encoder.split_images(synthetic_dir, "train"))
    grid = layer3_side(64)
    cells = pretrain_encoder.cell_targets(images, labels, 64, 64, grid)
    assert grid == 4 and cells.shape == (len(images), len(labels.colours) * len(labels.shapes) + 1, 4, 4)
    torch.testing.assert_close(cells.sum(1), torch.ones(len(images), 4, 4))
    for row, image in enumerate(images):
        maps = pretrain_encoder.object_map(image, labels, 64)
        covered = {value: (maps == value).float().mean().item() for value in maps.unique().tolist() if value}
        assert covered and set(covered) == {labels.pair(obj) for obj in image["objects"]} - {0}  # 0: not in train
        for value, share in covered.items():
            assert cells[row, value].mean().item() == pytest.approx(share, abs=1e-5)
    model, _, _ = pretrain_encoder.build("resnet18", len(labels.names), cells.size(1) - 1, 1e-3,
                                         torch.device("cpu"), "fp32")
    logits, cell_logits, centre_logits = model.heads(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, len(labels.names)) and cell_logits.shape == (2, cells.size(1), grid, grid)
    assert centre_logits is None  # the centre head is optional (test below)


def test_centre_targets_name_the_cell_of_each_objects_centre():
    images = [{"width": 200, "height": 100, "objects": [  # resized to 128 x 64, a 64 x 64 crop from x = 32
        {"colour": "red", "shape": "circle", "bbox": [50, 10, 20, 20]},  # centre (60, 20): crop (6.4, 12.8)
        {"colour": "blue", "shape": "star", "bbox": [110, 60, 30, 30]},  # centre (125, 75): crop (48, 48)
        {"colour": "red", "shape": "circle", "bbox": [0, 0, 20, 20]}]}]  # centre (10, 10): left of the crop
    labels = pretrain_encoder.Labels(images)
    targets = pretrain_encoder.centre_targets(images, labels, 64, 64, 4)
    expected = torch.zeros(1, 4, 4, dtype=torch.long)
    expected[0, 0, 0] = labels.pair(images[0]["objects"][0])
    expected[0, 3, 3] = labels.pair(images[0]["objects"][1])
    assert torch.equal(targets, expected) and expected[0, 0, 0] != expected[0, 3, 3] > 0


def test_pretraining_with_the_centre_head_saves_it_beside_the_resnet(synthetic_dir, tmp_path, one_thread):
    model, reports = pretrain_encoder.pretrain(synthetic_dir, 32, epochs=1, batch_size=8, centres=True,
                                               say=lambda line: None)
    _, cell_logits, centre_logits = model.heads(torch.zeros(2, 3, 32, 32))
    assert centre_logits is not None and centre_logits.shape == cell_logits.shape and len(reports) == 1
    state = torch.load(pretrain_encoder.save_backbone(model, tmp_path / "encoder.pth"), weights_only=True)
    assert set(state) == {name for name in model.net.state_dict() if not name.startswith("fc.")} | \
        {"centres.weight", "centres.bias"}
    torch.testing.assert_close(state["centres.weight"], model.centres.weight)


def test_pretraining_reports_every_epoch_and_saves_weights_train_can_load(synthetic_dir, tmp_path, one_thread):
    model, reports = pretrain_encoder.pretrain(synthetic_dir, 32, epochs=2, batch_size=8, say=lambda line: None)
    assert [report["epoch"] for report in reports] == [1, 2]
    for report in reports:
        assert all(0.0 <= report[key] <= 1.0 for key in ("background", "colour", "shape", "pairs"))
    path = pretrain_encoder.save_backbone(model, tmp_path / "encoder.pth")
    assert not any(name.startswith("fc.") for name in torch.load(path, weights_only=True))
    loaded, pretrained = load_backbone("resnet18", "yes", str(path))
    assert pretrained
    torch.testing.assert_close(loaded.layer4[1].conv2.weight, model.net.layer4[1].conv2.weight)


class _Oracle(torch.nn.Module):
    """Scores each image's true labels high (the image's first pixel says which row it is), or, inverted, low."""

    def __init__(self, targets: torch.Tensor, inverted: bool = False) -> None:
        super().__init__()
        self.targets, self.sign = targets, -1.0 if inverted else 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.sign * (self.targets[images[:, 0, 0, 0].long()] * 10 - 5)


def test_accuracy_is_one_for_a_perfect_model_and_zero_for_a_perverse_one(synthetic_dir):
    images = pretrain_encoder.split_images(synthetic_dir, "val")
    labels = pretrain_encoder.Labels(pretrain_encoder.split_images(synthetic_dir, "train"))
    _, targets, counts = pretrain_encoder.load_split(synthetic_dir, "val", images, labels, 32)
    pixels = torch.zeros(len(targets), 3, 4, 4)
    pixels[:, 0, 0, 0] = torch.arange(len(targets)).float()
    assert pretrain_encoder.accuracy(_Oracle(targets), pixels, targets, counts, labels) == \
        {"background": 1.0, "colour": 1.0, "shape": 1.0, "pairs": 1.0}
    wrong = pretrain_encoder.accuracy(_Oracle(targets, inverted=True), pixels, targets, counts, labels)
    assert wrong["background"] == wrong["colour"] == wrong["shape"] == wrong["pairs"] == 0.0


def test_pretraining_refuses_data_without_object_lists(synthetic_dir, tmp_path):
    (tmp_path / "annotations").mkdir()
    annotations = json.loads(annotation_path(synthetic_dir, "train").read_text())
    for image in annotations["images"]:
        del image["objects"]
    annotation_path(tmp_path, "train").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="object lists"):
        pretrain_encoder.split_images(tmp_path, "train")


def test_the_cli_refuses_to_replace_a_weights_file(synthetic_dir, tmp_path, capsys):
    existing = tmp_path / "mine.pth"
    existing.write_bytes(b"not ours")
    assert pretrain_encoder.main(["--data-dir", str(synthetic_dir), "--save", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"not ours"


def test_a_run_with_pretrain_epochs_captions_with_the_cnn_it_pretrained(synthetic_dir, tmp_path, one_thread):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data, out, pretrain_epochs=1, epochs=1, max_steps_per_epoch=2)
    train.train(config, progress=False)
    weights = torch.load(out / train.PRETRAINED_NAME, weights_only=True)
    state = load_checkpoint(out / "last.pt")
    assert state["encoder_pretrained"] and state["config"]["pretrain_epochs"] == 1
    # Frozen, as ImageNet weights are: the checkpoint's backbone is the pretrained one, and its features were cached.
    torch.testing.assert_close(state["encoder"]["backbone.7.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    assert list((data / "cache").glob("features_train_*.npy"))
    with pytest.raises(train.CheckpointError, match="holds a training run"):
        train.train(config, progress=False)
    (out / "last.pt").unlink()
    (out / "best.pt").unlink()
    # Left by a start that was killed: used again only with the settings it was pretrained with.
    with pytest.raises(train.CheckpointError, match=f"{train.PRETRAINED_NAME} exists.*pretrain_lr"):
        train.train(config.replace(pretrain_lr=1e-3), progress=False)
    assert torch.load(out / train.PRETRAINED_NAME, weights_only=True).keys() == weights.keys()


def test_a_run_with_object_features_pretrains_the_centre_head_and_its_checkpoint_reads_it(synthetic_dir, tmp_path,
                                                                                        one_thread):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data, out, pretrain_epochs=1, epochs=1, max_steps_per_epoch=2, attention=True,
                         object_features=True)
    train.train(config, progress=False)
    weights = torch.load(out / train.PRETRAINED_NAME, weights_only=True)
    encoder, decoder, vocab, _ = build_models(load_checkpoint(out / "best.pt"))
    torch.testing.assert_close(encoder.objects.weight, weights["centres.weight"])  # frozen, as the ResNet is
    features = encoder(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 1 + 2 * 2, config.embed_size)
    assert decoder.greedy(features, max_len=5).shape[0] == 2


def test_pretrain_epochs_need_a_backbone_from_scratch(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="pretrained no"):
        tiny_config(synthetic_dir, tmp_path, pretrain_epochs=2, pretrained="yes").validate()


def test_learning_rate_is_held_then_falls_to_zero_over_the_last_fifth():
    lr, total = 4e-3, 100
    rates = [pretrain_encoder.learning_rate(lr, step, total) for step in range(total)]
    assert rates[:80] == [lr] * 80
    assert all(earlier > later for earlier, later in zip(rates[80:], rates[81:]))
    assert rates[90] == pytest.approx(lr / 2)
    assert 0 < rates[-1] == pytest.approx(lr / 20)  # the last step still learns
