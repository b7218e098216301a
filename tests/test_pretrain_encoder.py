"""Pretraining the CNN on the synthetic objects: labels from the annotations, reports per epoch, weights that
train.py loads like ImageNet weights, and the recipe's pretraining stage."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from captioning import pretraining
from prepare import synthetic
from prepare.synthetic import easy
import pretrain_encoder
import train
from captioning import training
from captioning.checkpoint import CheckpointError
from captioning.annotations import annotation_path, image_path
from data_loader import Preprocess, load_image
from captioning.checkpoint import build_models, load_checkpoint
from conftest import ROOT, tiny_config
from captioning.backbone import layer3_side, load_backbone
from object_sets import write_object_set


def test_labels_are_the_backgrounds_words_and_categories_of_each_image(synthetic_dir):
    split = pretraining.SplitObjects(synthetic_dir, "val")
    labels = pretraining.Labels(pretraining.SplitObjects(synthetic_dir, "train"))
    pixels, targets, counts = pretraining.load_split(synthetic_dir, "val", split, labels, 32)
    assert pixels.shape == (len(split.images), 3, 32, 32) and targets.shape == (len(split.images), len(labels.names))
    assert len(labels.categories) == len(easy.COLOURS) * len(easy.SHAPES)  # every pair listed
    assert set(labels.words) == set(easy.COLOURS) | set(easy.SHAPES)
    assert set(labels.backgrounds) == set(easy.BACKGROUNDS)
    for row, item in enumerate(split.images):
        named = {labels.names[index] for index in targets[row].nonzero().flatten().tolist()}
        categories = {split.category_name(annotation) for annotation in item.instances}
        expected = {("background", name) for name in item.stuff} | {("category", name) for name in categories} | {
            ("word", word) for name in categories for word in name.split()}
        assert named == expected and len(item.stuff) == 1 and categories
        assert counts[row] == len(item.instances)


def test_the_readers_take_any_coco_format_set(tmp_path):
    """Polygons, compressed and uncompressed RLE, a crowd, an image with no objects, a category no caption names,
    categories that are not colour-shape pairs, a stuff file: the labels, maps and centres of each image."""
    data = write_object_set(tmp_path)
    split = pretraining.SplitObjects(data, "train")
    labels = pretraining.Labels(split)
    assert labels.categories == ["dog", "red car", "zebra"] and labels.backgrounds == ["grass", "sky"]
    assert set(labels.words) == {"dog", "red", "car", "zebra", "animal", "vehicle"}
    _, targets, counts = pretraining.load_split(data, "train", split, labels, 48, 48)
    assert counts.tolist() == [1, 3, 0, 0]  # a crowd is no one object
    named = [{labels.names[i] for i in row.nonzero().flatten().tolist()} for row in targets]
    assert named[0] == {("background", "grass"), ("category", "dog"), ("word", "dog"), ("word", "animal")}
    assert ("category", "red car") in named[1] and ("word", "vehicle") in named[1]
    assert named[2] == {("background", "sky")}
    assert ("category", "dog") in named[3]  # the crowd is dogs
    transform = Preprocess(48, 48)  # 80 x 60 -> 64 x 48, the crop from x = 8
    maps = [pretraining.object_map(split, item, labels, transform) for item in split.images]
    dog, car = labels.category("dog"), labels.category("red car")
    assert (maps[0] == dog).sum().item() == pytest.approx(400 * 0.8 ** 2, rel=0.15)  # the polygon's 20 x 20
    assert maps[0][17:31, 17:31].eq(dog).all() and maps[0][:10].eq(0).all()
    assert (maps[1] == car).sum().item() > 0 and maps[2].eq(0).all()
    assert maps[3].eq(0).all()  # the crowd lies in the columns the crop leaves out
    centres = pretraining.centre_targets(split, labels, transform, 3)
    expected = torch.zeros(4, 3, 3, dtype=torch.long)
    expected[0, 1, 1] = dog  # (40, 30) -> (24, 24): the middle cell
    expected[1, 0, 0] = car  # (20, 10) -> (8, 8)
    expected[1, 2, 2] = car  # (60, 46) -> (40, 36.8)
    expected[1, 1, 1] = dog
    assert torch.equal(centres, expected)  # the crowd has no centre


def test_without_a_stuff_file_there_are_no_background_labels(tmp_path):
    data = write_object_set(tmp_path, stuff=False)
    labels = pretraining.Labels(pretraining.SplitObjects(data, "train"))
    assert labels.backgrounds == [] and labels.categories == ["dog", "red car", "zebra"]


def test_object_maps_show_each_object_where_the_cnn_sees_it(tmp_path):
    """From the instances' segmentations on images of varied size and aspect ratio (the hard set), resized and
    cropped as the CNN sees them: inside each object of the map, the image shows that object's colour."""
    synthetic.generate(tmp_path, n_train=12, n_val=1, n_test=0, seed=3, variety="hard")
    split = pretraining.SplitObjects(tmp_path, "train")
    labels = pretraining.Labels(split)
    transform = Preprocess(64, 72)
    assert len({(item.image["width"], item.image["height"]) for item in split.images}) > 3
    checked = 0
    for item in split.images:
        maps = pretraining.object_map(split, item, labels, transform)
        assert maps.shape == (64, 64)
        pixels = transform(load_image(image_path(tmp_path, "train", item.image["file_name"]))) / transform.inv_std \
            + transform.mean  # (3, 64, 64) on the 0..255 scale
        grown = F.max_pool2d(maps[None, None].float(), 5, 1, 2)[0, 0]
        shrunk = -F.max_pool2d(-maps[None, None].float(), 5, 1, 2)[0, 0]
        inside = (grown == shrunk) & (maps > 0)  # 5 x 5 of one object: away from its darker outline
        for value in maps[inside].unique().tolist():
            if (inside & (maps == value)).sum() < 4:  # a small star: its darker outline is most of it
                continue
            colour = labels.categories[value - 1].split()[0]
            seen = pixels[:, inside & (maps == value)].mean(1)
            assert (seen - torch.tensor(easy.COLOURS[colour])).abs().max() < 30, (item.image, colour, seen)
            checked += 1
    assert checked >= 10


def test_cell_targets_are_the_share_of_each_cell_each_category_covers(synthetic_dir):
    split = pretraining.SplitObjects(synthetic_dir, "val")
    labels = pretraining.Labels(pretraining.SplitObjects(synthetic_dir, "train"))
    grid, transform = layer3_side(64), Preprocess(64, 64)
    cells = pretraining.cell_targets(split, labels, transform, grid)
    assert grid == 4 and cells.shape == (len(split.images), len(labels.categories) + 1, 4, 4)
    torch.testing.assert_close(cells.sum(1), torch.ones(len(split.images), 4, 4))
    for row, item in enumerate(split.images):
        maps = pretraining.object_map(split, item, labels, transform)
        covered = {value: (maps == value).float().mean().item() for value in maps.unique().tolist() if value}
        assert covered and set(covered) == {labels.category(split.category_name(a)) for a in item.instances}
        for value, share in covered.items():
            assert cells[row, value].mean().item() == pytest.approx(share, abs=1e-5)
    model, _, _ = pretraining.build("resnet18", len(labels.names), cells.size(1) - 1, 1e-3,
                                         torch.device("cpu"), "fp32")
    logits, cell_logits, centre_logits = model.heads(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, len(labels.names)) and cell_logits.shape == (2, cells.size(1), grid, grid)
    assert centre_logits is None  # the centre head is optional (test below)


def test_pretraining_with_the_centre_head_saves_it_beside_the_resnet(synthetic_dir, tmp_path, one_thread):
    model, reports = pretraining.pretrain(synthetic_dir, 32, epochs=1, batch_size=8, centres=True,
                                               say=lambda line: None)
    _, cell_logits, centre_logits = model.heads(torch.zeros(2, 3, 32, 32))
    assert centre_logits is not None and centre_logits.shape == cell_logits.shape and len(reports) == 1
    state = torch.load(pretraining.save_backbone(model, tmp_path / "encoder.pth"), weights_only=True)
    assert set(state) == {name for name in model.net.state_dict() if not name.startswith("fc.")} | \
        {"centres.weight", "centres.bias"}
    torch.testing.assert_close(state["centres.weight"], model.centres.weight)


def test_pretraining_reports_every_epoch_and_saves_weights_train_can_load(synthetic_dir, tmp_path, one_thread):
    model, reports = pretraining.pretrain(synthetic_dir, 32, epochs=2, batch_size=8, say=lambda line: None)
    assert [report["epoch"] for report in reports] == [1, 2]
    for report in reports:
        assert all(0.0 <= report[key] <= 1.0 for key in ("background", "category", "objects"))
    path = pretraining.save_backbone(model, tmp_path / "encoder.pth")
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
    split = pretraining.SplitObjects(synthetic_dir, "val")
    labels = pretraining.Labels(pretraining.SplitObjects(synthetic_dir, "train"))
    _, targets, counts = pretraining.load_split(synthetic_dir, "val", split, labels, 32)
    pixels = torch.zeros(len(targets), 3, 4, 4)
    pixels[:, 0, 0, 0] = torch.arange(len(targets)).float()
    assert pretraining.accuracy(_Oracle(targets), pixels, targets, counts, labels) == \
        {"background": 1.0, "category": 1.0, "objects": 1.0}
    wrong = pretraining.accuracy(_Oracle(targets, inverted=True), pixels, targets, counts, labels)
    assert wrong["background"] == wrong["category"] == wrong["objects"] == 0.0


def test_pretraining_refuses_a_set_without_instances_naming_the_file_and_the_ways_on(synthetic_dir, tmp_path):
    (tmp_path / "annotations").mkdir()
    shutil.copy(annotation_path(synthetic_dir, "train"), annotation_path(tmp_path, "train"))
    with pytest.raises(FileNotFoundError, match="instances_train.json.*add instances files.*--captions-only"):
        pretraining.SplitObjects(tmp_path, "train")


def test_the_cli_refuses_to_replace_a_weights_file(synthetic_dir, tmp_path, capsys):
    existing = tmp_path / "mine.pth"
    existing.write_bytes(b"not ours")
    assert pretrain_encoder.main(["--data-dir", str(synthetic_dir), "--save", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"not ours"


def test_a_run_with_pretrain_epochs_captions_with_the_cnn_it_pretrained(synthetic_dir, tmp_path, one_thread):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data, out, pretrain_epochs=1, epochs=1, max_steps_per_epoch=2)
    training.train(config, progress=False)
    weights = torch.load(out / training.PRETRAINED_NAME, weights_only=True)
    state = load_checkpoint(out / "last.pt")
    assert state["encoder_pretrained"] and state["config"]["pretrain_epochs"] == 1
    # Frozen, as ImageNet weights are: the checkpoint's backbone is the pretrained one, and its features were cached.
    torch.testing.assert_close(state["encoder"]["backbone.7.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    assert list((data / "cache").glob("features_train_*.npy"))
    with pytest.raises(CheckpointError, match="holds a training run"):
        training.train(config, progress=False)
    (out / "last.pt").unlink()
    (out / "best.pt").unlink()
    # Left by a start that was killed: used again only with the settings it was pretrained with.
    with pytest.raises(CheckpointError, match=f"{training.PRETRAINED_NAME} exists.*pretrain_lr"):
        training.train(config.replace(pretrain_lr=1e-3), progress=False)
    assert torch.load(out / training.PRETRAINED_NAME, weights_only=True).keys() == weights.keys()


def test_a_run_with_object_features_pretrains_the_centre_head_and_its_checkpoint_reads_it(synthetic_dir, tmp_path,
                                                                                        one_thread):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data, out, pretrain_epochs=1, epochs=1, max_steps_per_epoch=2, attention=True,
                         object_features=True)
    training.train(config, progress=False)
    weights = torch.load(out / training.PRETRAINED_NAME, weights_only=True)
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
    rates = [pretraining.learning_rate(lr, step, total) for step in range(total)]
    assert rates[:80] == [lr] * 80
    assert all(earlier > later for earlier, later in zip(rates[80:], rates[81:]))
    assert rates[90] == pytest.approx(lr / 2)
    assert 0 < rates[-1] == pytest.approx(lr / 20)  # the last step still learns


def test_the_recipe_runs_on_a_coco_format_set_made_by_another_program(tmp_path, one_thread, capsys):
    """Its own categories, polygons and RLE, a crowd and a stuff file: the recipe's stages, pretraining and object
    features included, train, caption and score its objects, with no flag; without instances it names the way on."""
    import evaluate

    data, out = write_object_set(tmp_path / "data"), tmp_path / "run"
    config = tiny_config(data, out, pretrain_epochs=1, pretrain_batch_size=2, object_features=True, epochs=1,
                         batch_size=2, scst_epochs=1)
    history = training.train(config, progress=False)
    assert len(history) == 2
    state = load_checkpoint(out / "best.pt")
    assert state["encoder"]["objects.weight"].shape[0] == 4  # three categories and "none"
    report = evaluate.evaluate(out / "best.pt", data, "test", progress=False)
    assert report["objects"]["human"]["objects"] == 5 and report["objects"]["model"]["captions"] == 4
    for split in ("train", "val", "test"):
        (data / "annotations" / f"instances_{split}.json").unlink()
    assert train.main(["--config", str(ROOT / "configs" / "synthetic.json"), "--data-dir", str(data), "--out",
                       str(tmp_path / "other")]) == 2
    assert "instances_train.json" in capsys.readouterr().err
    assert train.main(["--config", str(ROOT / "configs" / "synthetic.json"), "--data-dir", str(data), "--out",
                       str(tmp_path / "other"), "--captions-only", "--image-size", "32", "--resize-size", "32",
                       "--embed-size", "16", "--hidden-size", "16", "--epochs", "1", "--scst-epochs", "0",
                       "--vocab-threshold", "1", "--batch-size", "2", "--no-progress"]) == 0


def test_progressive_resizing_pretrains_the_first_epochs_on_smaller_images(synthetic_dir):
    """Progressive resizing: the first epochs see smaller images (the heads fit any grid), the rest the captioner's
    size; the learning rate follows one schedule over all of them."""
    reports = []
    model, reports = pretraining.pretrain(synthetic_dir, 32, epochs=2, batch_size=8, small_epochs=1, small_size=16,
                                          say=lambda line: None)
    assert [report["size"] for report in reports] == [16, 32]
    assert all(0 <= report["objects"] <= 1 for report in reports)
    with torch.no_grad():
        assert model.net(torch.zeros(1, 3, 32, 32)).shape[0] == 1


def test_the_recipe_sizes_its_progressive_resizing_from_the_image_size(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "run", image_size=96, resize_size=96, pretrain_epochs=9,
                         pretrain_small_share=0.67, pretrain_small_scale=0.67)
    assert (config.pretrain_small_epochs, config.pretrain_small_size) == (6, 64)
    assert config.replace(pretrain_epochs=3).pretrain_small_epochs == 2  # a shorter pretraining, in proportion
    assert config.replace(pretrain_epochs=1).pretrain_small_epochs == 0  # its one epoch at the captioner's size
    for setting in ({"pretrain_small_scale": 2.0}, {"pretrain_small_share": 1.0}):
        with pytest.raises(ValueError, match=next(iter(setting))):
            tiny_config(tmp_path, tmp_path / "run", **setting).validate()
