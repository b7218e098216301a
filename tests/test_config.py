"""Every setting has a valid range, checked before any work starts, whether it comes from a flag or a checkpoint."""
from __future__ import annotations

import math

import pytest
import torch

import evaluate
import train
from captioning import training
from captioning.checkpoint import CheckpointError, load_checkpoint
from captioning.config import Config, make_config
from conftest import ROOT, tiny_config
from captioning.inference import Captioner


@pytest.mark.parametrize("name, value", [
    ("lr", -1e-3), ("lr", math.nan), ("backbone_lr", 0.0), ("grad_clip", -1.0), ("max_steps_per_epoch", -1),
    ("max_caption_length", -1), ("val_max_images", -5), ("max_len", 1_000_000_000), ("log_every", 0),
    ("val_metric", "cider"), ("weight_decay", math.nan), ("scheduled_sampling", 1.5), ("lr_factor", 1.0),
    ("fine_tune_blocks", 0), ("val_beam_size", 0), ("vocab_threshold", 0),
])
def test_a_value_out_of_range_is_refused_naming_the_setting(name, value):
    with pytest.raises(ValueError, match=name):
        Config(**{name: value}).validate()


@pytest.mark.parametrize("name", ["coverage", "object_features"])
def test_settings_of_the_attention_are_refused_without_it(name):
    with pytest.raises(ValueError, match=f"{name}.*attention true"):
        Config(**{name: True, "attention": False}).validate()
    Config(**{name: True, "attention": True}).validate()


def test_attention_over_layer4_needs_attention_and_leaves_the_centre_head_to_layer3():
    assert Config().attention_stage == "layer3"  # what every recipe and checkpoint before the setting attended over
    Config(attention=True, attention_stage="layer4").validate()
    with pytest.raises(ValueError, match="attention_stage.*attention true"):
        Config(attention_stage="layer4").validate()
    with pytest.raises(ValueError, match="object_features.*layer3"):
        Config(attention=True, attention_stage="layer4", object_features=True).validate()
    with pytest.raises(ValueError, match="attention_stage must be one of"):
        Config(attention=True, attention_stage="layer2").validate()


def test_the_recipes_and_the_defaults_are_valid():
    from captioning.config import make_config
    from conftest import ROOT
    Config().validate()
    for recipe in (ROOT / "configs").glob("*.json"):
        make_config(recipe)


def test_object_features_without_a_centre_head_are_refused_before_anything_is_written(synthetic_dir, tmp_path,
                                                                                      capsys):
    out = tmp_path / "run"  # the recipe reads a centre head, and neither pretrains one nor is given a file with one
    assert train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out", str(out),
                       "--pretrain-epochs", "0", "--no-progress"]) == 2
    assert "--centres" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == [".train.lock"]  # no vocabulary, no checkpoint: only the lock


def test_train_refuses_a_bad_setting_before_creating_anything(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out", str(out),
                       "--lr", "-1", "--no-progress"]) == 2
    assert "lr must be positive" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("name, value, message", [
    ("max_len", 1_000_000_000, "max_len must be between 1 and 200"),  # endless captions
    ("image_size", 100_000, "image_size must be between 1 and 1024")])  # tens of gigabytes of input
def test_a_checkpoint_asking_for_endless_work_is_refused(name, value, message, trained_checkpoint, tmp_path):
    state = load_checkpoint(trained_checkpoint)
    state["config"][name] = value
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    with pytest.raises(CheckpointError, match=message):
        Captioner(crafted, "cpu")


def test_an_image_size_beyond_any_photo_is_refused_on_the_command_line(tmp_path, capsys):
    assert train.main(["--config", "configs/synthetic.json", "--out", str(tmp_path / "run"), "--image-size",
                       "100000", "--no-progress"]) == 2
    assert "image_size must be between 1 and 1024" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--beam-size", "0"), ("--beam-size", "-1"), ("--batch-size", "0"),
                                         ("--max-images", "-1")])
def test_evaluate_refuses_bad_numbers_before_captioning(flag, value, trained_checkpoint, capsys):
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["--checkpoint", str(trained_checkpoint), flag, value])
    assert stopped.value.code == 2 and flag in capsys.readouterr().err


def test_evaluate_scores_exactly_max_images(trained_checkpoint, synthetic_dir):
    report = evaluate.evaluate(trained_checkpoint, synthetic_dir, "val", max_images=2, batch_size=64, device="cpu",
                               progress=False)
    assert report["images"] == 2 and len(report["captions"]) == 2


def test_the_coco_recipe_updates_as_often_as_the_literature_at_its_learning_rate():
    # Adam at 4e-4 is the rate captioners trained with ~80 captions a step; a batch of 64 images (~320 captions) at
    # that rate gave ~1,770 updates an epoch and ~18k before fine-tuning, against ~140k in reference implementations.
    config = make_config(ROOT / "configs" / "coco.json")
    karpathy_train_images, captions_per_image = 113_287, 5
    updates_per_epoch = math.ceil(karpathy_train_images / config.batch_size)
    assert config.lr == 4e-4 and config.batch_size * captions_per_image <= 100
    assert updates_per_epoch * config.fine_tune_after >= 60_000  # the frozen phase
    assert updates_per_epoch * config.epochs >= 120_000  # the whole run
    assert 0 <= config.fine_tune_after < config.epochs  # the fine-tuning phase happens


@pytest.mark.parametrize("name, value, expected", [
    ("attention", "false", False), ("attention", "True", True), ("hflip", "off", False), ("random_crop", 0, False),
    ("epochs", "3", 3), ("epochs", 3.0, 3), ("lr", "1e-3", 1e-3), ("lr", 1, 1.0), ("data_dir", 2024, "2024"),
])
def test_notebook_parameters_and_recipe_values_are_read_as_their_settings_type(name, value, expected):
    # papermill passes -p values it cannot read as Python as text ("false"); a recipe may hold "3"
    read = make_config(**{name: value}, check=False)
    assert getattr(read, name) == expected and type(getattr(read, name)) is type(expected)


@pytest.mark.parametrize("name, value", [
    ("attention", "maybe"), ("attention", 2), ("epochs", 1.5), ("epochs", "1.5"), ("epochs", True),
    ("lr", "fast"), ("out", True), ("out", ["models"]),
])
def test_a_value_that_is_not_of_its_settings_type_is_refused_naming_it(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        make_config(**{name: value}, check=False)


def test_a_recipe_with_a_number_as_text_trains_as_that_number(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text('{"epochs": "3", "attention": "false"}')
    config = make_config(recipe)
    assert config.epochs == 3 and config.attention is False


def test_the_command_line_reads_flags_with_the_same_reader(capsys):
    with pytest.raises(SystemExit):
        train.main(["--epochs", "1.5"])
    assert "epochs must be a whole number, got '1.5'" in capsys.readouterr().err


def test_overwrite_false_as_papermill_passes_it_does_not_replace_a_run(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"an earlier run")
    with pytest.raises(CheckpointError, match="holds a training run already"):
        training.train(tiny_config(synthetic_dir, out), overwrite="false", progress=False)
    assert (out / "last.pt").read_bytes() == b"an earlier run"
    with pytest.raises(ValueError, match="overwrite must be true or false"):
        training.train(tiny_config(synthetic_dir, out), overwrite="replace", progress=False)


@pytest.mark.parametrize("name, value", [("beam_size", 0), ("beam_size", "0"), ("max_images", -1),
                                         ("batch_size", 0), ("beam_size", 1.5)])
def test_evaluate_as_notebook_3_calls_it_refuses_bad_numbers_naming_the_parameter(name, value, trained_checkpoint,
                                                                                  synthetic_dir):
    with pytest.raises(ValueError, match=f"^{name} must be"):  # beam 0 decoded greedily, reported as "Beam 0"
        evaluate.evaluate(trained_checkpoint, synthetic_dir, "val", device="cpu", progress=False, **{name: value})


def test_a_checkpoint_from_before_the_newest_settings_loads_with_their_defaults(trained_checkpoint, tmp_path):
    """Checkpoints written before the package layout hold a flat config without the settings added since
    (attention_stage, the pretraining's progressive resizing): they load and caption, those settings at their
    defaults, which are the behaviour those checkpoints were trained with."""
    from captioning.checkpoint import save_checkpoint
    state = load_checkpoint(trained_checkpoint)
    for name in ("attention_stage", "pretrain_small_share", "pretrain_small_scale"):
        del state["config"][name]
    old = tmp_path / "old.pt"
    save_checkpoint(old, state)
    captioner = Captioner(old)
    assert captioner.config.attention_stage == Config.attention_stage
    assert captioner.config.pretrain_small_share == Config.pretrain_small_share


def test_a_recipe_groups_its_settings_and_a_setting_in_the_wrong_group_is_refused(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"_comment": "grouped", "model": {"hidden_size": 48}, "training": {"epochs": 2}}')
    config = make_config(recipe)
    assert (config.hidden_size, config.epochs) == (48, 2)
    recipe.write_text('{"model": {"epochs": 2}}')
    with pytest.raises(ValueError, match="'model' holds epochs \\(in 'training'\\)"):
        make_config(recipe)
    recipe.write_text('{"model": {"hiden_size": 48}}')
    with pytest.raises(ValueError, match="hiden_size \\(no such setting\\)"):
        make_config(recipe)


def test_one_image_a_batch_is_refused_only_where_the_cnn_trains():
    """U12: BatchNorm cannot train on one image; say which setting, before anything runs."""
    with pytest.raises(ValueError, match="batch_size 1 with a CNN that trains"):
        Config(batch_size=1, pretrained="no", train_backbone="auto").validate()
    with pytest.raises(ValueError, match="batch_size 1"):
        Config(batch_size=1, pretrained="yes", train_backbone="no", fine_tune_after=2).validate()
    Config(batch_size=1, pretrained="yes", train_backbone="no").validate()  # a frozen CNN: one image is fine
    with pytest.raises(ValueError, match="pretrain_batch_size"):
        Config(pretrain_batch_size=1).validate()
