"""The shipped synthetic recipe, with its own stages and switches at tiny sizes, is interrupted and resumes.

Its stages: the CNN's pretraining (pretrain_epochs), then cross-entropy epochs of an attention decoder that reads the
pretrained centre head (object_features, query_word, coverage), then self-critical epochs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import caption
from captioning import pretraining
import train
from captioning import training
from captioning.training import loop
from captioning.checkpoint import load_checkpoint
from captioning.config import make_config
from conftest import ROOT

RECIPE = ROOT / "configs" / "synthetic.json"
# Only sizes and lengths differ from the recipe; every switch is its own.
TINY = {"image_size": 32, "resize_size": 32, "embed_size": 32, "hidden_size": 64, "batch_size": 8,
        "vocab_threshold": 1, "precision": "fp32", "pretrain_epochs": 1, "epochs": 1, "scst_epochs": 1,
        "max_steps_per_epoch": 2, "val_max_images": 4, "device": "cpu"}


def recipe_flags(data: Path, out: Path, **changes) -> list[str]:
    """The command line of a tiny run of the recipe."""
    values = {**TINY, **changes, "data_dir": data, "out": out}
    flags = [item for name, value in values.items() for item in ("--" + name.replace("_", "-"), str(value))]
    return ["--config", str(RECIPE), *flags, "--no-progress"]


def diverging(run, batch):
    """A first step whose loss is no longer a number, as train_step reports it."""
    raise training.TrainingFailed("the caption loss became nan at epoch 1, step 0")


@pytest.fixture
def data(synthetic_dir, tmp_path) -> Path:
    """A data folder of the test's own (the feature cache the run writes there starts empty)."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "data", ignore=shutil.ignore_patterns("cache")))


def test_the_recipe_is_interrupted_resumes_goes_on_and_captions(data, tmp_path, monkeypatch, capsys, one_thread):
    out = tmp_path / "run"
    assert make_config(RECIPE).object_features and make_config(RECIPE).pretrain_epochs  # what is tested here
    real_step, calls = loop.train_step, []

    def ctrl_c_at_the_second_step(run, batch):
        calls.append(None)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what train.main makes of SIGTERM too
        return real_step(run, batch)
    monkeypatch.setattr(loop, "train_step", ctrl_c_at_the_second_step)
    assert train.main(recipe_flags(data, out)) == 130
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["batches_done"]) == (0, 1) and "objects.weight" in state["encoder"]

    # As a user resumes: the recipe and the run folder, and nothing else. The checkpoint holds the CNN and its
    # centre head; the run's own pretrained file may be named too.
    monkeypatch.setattr(loop, "train_step", real_step)
    assert train.main(["--config", str(RECIPE), "--out", str(out), "--resume", "--no-progress"]) == 0, \
        capsys.readouterr().err
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and "train_reward" in state["history"][-1]  # the self-critical epoch too
    assert train.main(["--config", str(RECIPE), "--out", str(out), "--resume", "--epochs", "2", "--weights",
                       str(out / training.PRETRAINED_NAME), "--no-progress"]) == 0, capsys.readouterr().err

    # Notebook 2's resume=True: the recipe's config, one more cross-entropy epoch.
    training.train(make_config(RECIPE, out=str(out), data_dir=str(data), epochs=3, scst_epochs=1), resume=True,
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
