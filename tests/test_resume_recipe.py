"""The shipped recipes, with their own stages and switches at tiny sizes, are interrupted, resume and caption.

The synthetic recipe's stages: the CNN's pretraining (pretrain_epochs), then cross-entropy epochs of an attention
decoder that reads the pretrained centre head (object_features, query_word, coverage), then self-critical epochs.
The COCO attention recipe's: a frozen "ImageNet" CNN (a saved random ResNet-18 stands in for the weights file) whose
layer4 cells are cached once, cross-entropy epochs of an attention decoder, then self-critical epochs, on a small
COCO-format set written as another program would (object_sets.py). configs/coco.json runs, stopped and resumed
in both its phases, in the COCO-scale rehearsal's test (test_rehearse_coco.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import caption
from captioning import pretraining
import train
from captioning import training
from captioning.training import loop
import torchvision

from captioning import features, metrics
from captioning.checkpoint import load_checkpoint
from captioning.config import make_config
from conftest import ROOT
from object_sets import write_object_set

RECIPE = ROOT / "configs" / "synthetic.json"
DEMO = ROOT / "configs" / "demo.json"  # the synthetic recipe at a laptop's cost: what make demo runs
COCO_ATTENTION = ROOT / "configs" / "coco_attention.json"
# Where each shipped recipe is trained, interrupted, resumed and made to caption.
TESTED = {"synthetic.json": "this file", "demo.json": "this file", "coco_attention.json": "this file",
          "coco.json": "test_rehearse_coco.py"}
# Only sizes and lengths differ from the recipe; every switch is its own.
TINY = {"image_size": 32, "resize_size": 32, "embed_size": 32, "hidden_size": 64, "batch_size": 8,
        "vocab_threshold": 1, "precision": "fp32", "pretrain_epochs": 1, "epochs": 1, "scst_epochs": 1,
        "max_steps_per_epoch": 2, "val_max_images": 4, "device": "cpu"}


def recipe_flags(data: Path, out: Path, recipe: Path = RECIPE, **changes) -> list[str]:
    """The command line of a tiny run of the recipe."""
    values = {**TINY, **changes, "data_dir": data, "out": out}
    flags = [item for name, value in values.items() for item in ("--" + name.replace("_", "-"), str(value))]
    return ["--config", str(recipe), *flags, "--no-progress"]


def diverging(run, batch):
    """A first step whose loss is no longer a number, as train_step reports it."""
    raise training.TrainingFailed("the caption loss became nan at epoch 1, step 0")


@pytest.fixture
def data(synthetic_dir, tmp_path) -> Path:
    """A data folder of the test's own (the feature cache the run writes there starts empty)."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "data", ignore=shutil.ignore_patterns("cache")))


@pytest.mark.parametrize("recipe", [RECIPE, DEMO], ids=lambda path: path.name)
def test_the_recipe_is_interrupted_resumes_goes_on_and_captions(data, tmp_path, monkeypatch, capsys, one_thread,
                                                                recipe):
    out = tmp_path / "run"
    assert make_config(recipe).object_features and make_config(recipe).pretrain_epochs  # what is tested here
    real_step, calls = loop.train_step, []

    def ctrl_c_at_the_second_step(run, batch):
        calls.append(None)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what train.main makes of SIGTERM too
        return real_step(run, batch)
    monkeypatch.setattr(loop, "train_step", ctrl_c_at_the_second_step)
    assert train.main(recipe_flags(data, out, recipe)) == 130
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["batches_done"]) == (0, 1) and "objects.weight" in state["encoder"]

    # As a user resumes: the recipe and the run folder, and nothing else. The checkpoint holds the CNN and its
    # centre head; the run's own pretrained file may be named too.
    monkeypatch.setattr(loop, "train_step", real_step)
    assert train.main(["--config", str(recipe), "--out", str(out), "--resume", "--no-progress"]) == 0, \
        capsys.readouterr().err
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and "train_reward" in state["history"][-1]  # the self-critical epoch too
    assert train.main(["--config", str(recipe), "--out", str(out), "--resume", "--epochs", "2", "--weights",
                       str(out / training.PRETRAINED_NAME), "--no-progress"]) == 0, capsys.readouterr().err

    # Notebook 2's resume=True: the recipe's config, one more cross-entropy epoch.
    training.train(make_config(recipe, out=str(out), data_dir=str(data), epochs=3, scst_epochs=1), resume=True,
                progress=False)
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 4 and state["global_step"] == 4 * TINY["max_steps_per_epoch"]
    assert [entry["kind"] for entry in training.read_log(out)].count("resume") == 3

    capsys.readouterr()
    image = sorted((data / "images" / "test").iterdir())[0]
    assert caption.main(["--checkpoint", str(out / "best.pt"), "--device", "cpu", str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")


@pytest.mark.parametrize("again", [[], ["--resume"]], ids=["rerun", "resume"])
def test_a_run_whose_first_epoch_failed_after_pretraining_starts_again_from_its_cnn(data, tmp_path, monkeypatch,
                                                                                    capsys, one_thread, again):
    out = tmp_path / "run"
    flags = recipe_flags(data, out, scst_epochs=0)
    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", diverging)
    assert train.main(flags) == 1
    assert (out / training.PRETRAINED_NAME).is_file() and not (out / "last.pt").exists()
    written = (out / training.PRETRAINED_NAME).read_bytes()
    monkeypatch.setattr(loop, "train_step", real_step)
    monkeypatch.setattr(pretraining, "pretrain", lambda *args, **kwargs: pytest.fail("pretrained again"))
    capsys.readouterr()
    assert train.main([*flags, *again]) == 0, capsys.readouterr().err
    assert str(out / training.PRETRAINED_NAME) in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert (out / training.PRETRAINED_NAME).read_bytes() == written


def test_a_cnn_pretrained_with_other_settings_is_not_reused(data, tmp_path, monkeypatch, capsys, one_thread):
    out = tmp_path / "run"
    monkeypatch.setattr(loop, "train_step", diverging)
    assert train.main(recipe_flags(data, out, scst_epochs=0)) == 1
    capsys.readouterr()
    assert train.main(recipe_flags(data, out, scst_epochs=0, pretrain_lr=0.001)) == 2
    error = capsys.readouterr().err
    assert "pretrain_lr" in error and "--overwrite" in error and error.count("\n") == 1


def test_ctrl_c_while_pretraining_says_so_in_one_line(data, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretraining, "pretrain", interrupted)
    out = tmp_path / "run"
    assert train.main(recipe_flags(data, out)) == 130
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pretraining" in error and "nothing was saved" in error
    assert not (out / training.PRETRAINED_NAME).exists() and not (out / "last.pt").exists()


def test_every_shipped_recipe_is_trained_interrupted_and_resumed_by_a_test():
    assert sorted(path.name for path in (ROOT / "configs").glob("*.json")) == sorted(TESTED)


def test_the_demo_recipe_is_the_synthetic_recipe_with_fewer_pixels_and_epochs():
    full, demo = make_config(RECIPE).to_dict(), make_config(DEMO).to_dict()
    differing = {name for name in full if full[name] != demo[name]}
    assert differing <= {"image_size", "resize_size", "epochs", "pretrain_epochs", "recipe"}, differing
    assert demo["image_size"] < full["image_size"] and demo["epochs"] <= full["epochs"]


# The COCO attention recipe at tiny sizes: a ResNet-18 at 64 px (a 2 x 2 layer4 grid) and a small decoder; its
# stages (frozen CNN, cross-entropy, self-critical) and switches (attention over layer4, beam-3 validation, 5 samples
# an image) are its own.
COCO_TINY = {"backbone": "resnet18", "image_size": 64, "resize_size": 64, "embed_size": 32, "hidden_size": 64,
             "batch_size": 2, "vocab_threshold": 1, "precision": "fp32", "epochs": 1, "scst_epochs": 1,
             "max_steps_per_epoch": 2, "val_max_images": 4, "device": "cpu", "num_workers": 0,
             "train_split": "train", "val_split": "val"}


def test_the_coco_attention_recipe_is_interrupted_in_each_stage_resumes_and_captions(tmp_path, monkeypatch, capsys,
                                                                                    one_thread):
    recipe = make_config(COCO_ATTENTION)
    assert (recipe.attention, recipe.attention_stage, recipe.train_backbone, recipe.val_beam_size,
            recipe.scst_samples) == (True, "layer4", "no", 3, 5) and recipe.scst_epochs and recipe.epochs
    data, out = write_object_set(tmp_path / "data"), tmp_path / "run"
    weights = tmp_path / "resnet18_stand_in.pth"  # stands in for the ImageNet weights file the recipe names
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    values = {**COCO_TINY, "data_dir": data, "out": out, "weights": weights}
    flags = ["--config", str(COCO_ATTENTION), *[item for name, value in values.items()
                                                 for item in ("--" + name.replace("_", "-"), str(value))],
             "--no-progress"]
    resume = ["--config", str(COCO_ATTENTION), "--out", str(out), "--resume", "--no-progress"]
    extracted, rewards, steps = [], [], []
    real_extract, real_cider, real_train, real_scst = (features.extract_features, metrics.CorpusCider,
                                                       loop.train_step, loop.scst_step)
    monkeypatch.setattr(features, "extract_features", lambda encoder, config, split, *args, **kwargs: extracted.append(
        (split, encoder.features_width(config.image_size))) or real_extract(encoder, config, split, *args, **kwargs))

    def counted_cider(references):
        references = list(references)  # one list of references an image
        rewards.append(len(references))
        return real_cider(references)
    monkeypatch.setattr(metrics, "CorpusCider", counted_cider)

    def interrupting(real, at):
        def step(run, batch):
            steps.append(batch.images.shape)
            if len(steps) == at:
                raise KeyboardInterrupt  # what train.main makes of SIGTERM too
            return real(run, batch)
        return step
    # Stopped at the cross-entropy stage's second step, then at the self-critical stage's second step.
    monkeypatch.setattr(loop, "train_step", interrupting(real_train, 2))
    assert train.main(flags) == 130, capsys.readouterr().err
    assert (load_checkpoint(out / "last.pt")["epoch"], load_checkpoint(out / "last.pt")["batches_done"]) == (0, 1)
    monkeypatch.setattr(loop, "train_step", real_train)
    steps.clear()
    monkeypatch.setattr(loop, "scst_step", interrupting(real_scst, 2))
    assert train.main(resume) == 130, capsys.readouterr().err
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["batches_done"]) == (1, 1) and "train_loss" in state["history"][-1]
    monkeypatch.setattr(loop, "scst_step", real_scst)
    assert train.main(resume) == 0, capsys.readouterr().err
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and state["global_step"] == 4 and "train_reward" in state["history"][-1]
    assert state["config"]["attention_stage"] == "layer4" and state["config"]["scst_samples"] == 5

    # The layer4 grid (2 x 2 cells of 512 after the pooled 512) was cached once for each split, and read by both
    # stages and both resumes; the reward's document frequencies were counted once in each process that trained a
    # self-critical step, over the training split's four images.
    assert extracted == [("train", 512 + 4 * 512), ("val", 512 + 4 * 512)]
    assert rewards == [4, 4]
    assert steps[0] == (2, 512 + 4 * 512)  # self-critical steps read the cache too
    log = training.read_log(out)
    assert [entry["kind"] for entry in log].count("scst") == 2 and [entry["kind"] for entry in log].count(
        "resume") == 2

    capsys.readouterr()
    image = sorted((data / "images" / "test").iterdir())[0]
    assert caption.main(["--checkpoint", str(out / "best.pt"), "--device", "cpu", "--beam-size", "3",
                         str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")
