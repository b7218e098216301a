"""Messages that say what went wrong: a broken weights file, a loop of links, a full disk, a notebook's parameter,
Ctrl-C while scoring (issue 31, U6, U8, U13)."""
from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import pytest
import torch
from torchvision.models import resnet18

import evaluate
import prepare_data
import train
from captioning import checkpoint, metrics
from test_cli import TINY_FLAGS, error_lines

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_text_file_given_as_weights_is_named_as_not_a_torch_file(synthetic_dir, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    weights.write_text("hello\n")
    assert train.main(TINY_FLAGS + ["--data-dir", str(synthetic_dir), "--out", str(tmp_path / "run"),
                                    "--pretrained", "yes", "--weights", str(weights)]) == 2
    [error] = error_lines(capsys.readouterr().err)  # the first run's tokenizing bar may precede it
    assert "is not a file torch.save wrote" in error and str(weights) in error and "(101)" not in error


def test_weights_holding_nan_are_refused_naming_the_tensor_not_the_learning_rate(synthetic_dir, tmp_path, capsys):
    state = resnet18().state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "nan.pth"
    torch.save(state, weights)
    assert train.main(TINY_FLAGS + ["--data-dir", str(synthetic_dir), "--out", str(tmp_path / "run"),
                                    "--pretrained", "yes", "--weights", str(weights)]) == 2
    [error] = error_lines(capsys.readouterr().err)  # the first run's tokenizing bar may precede it
    assert "NaN or infinite" in error and "layer1.0.conv1.weight" in error and "learning rate" not in error


def test_a_data_dir_that_is_a_loop_of_links_is_named_as_one(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert train.main(TINY_FLAGS + ["--data-dir", str(tmp_path / "a"), "--out", str(tmp_path / "run")]) == 2
    [error] = error_lines(capsys.readouterr().err)  # the first run's tokenizing bar may precede it
    assert "cannot be reached" in error and os.strerror(errno.ELOOP) in error


def test_a_checkpoint_that_does_not_fit_on_the_disk_says_so(tmp_path, monkeypatch):
    def zip_writer_failure(*args, **kwargs):  # what torch.save raises when the disk fills under it
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 529984 vs 529880")
    monkeypatch.setattr(torch, "save", zip_writer_failure)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(10, 10, 1000))
    with pytest.raises(OSError) as error:
        checkpoint.save_checkpoint(tmp_path / "last.pt", {"weights": torch.zeros(1000)})
    assert error.value.errno == errno.ENOSPC and "No space left on device" in str(error.value)
    assert not list(tmp_path.iterdir())  # no half-written file left
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(10, 10, 2**40))
    with pytest.raises(OSError) as error:  # with room to spare, the disk is not blamed
        checkpoint.save_checkpoint(tmp_path / "last.pt", {"weights": torch.zeros(1000)})
    assert error.value.errno == errno.EIO and "unexpected pos" in str(error.value)


@pytest.mark.parametrize("parameter, value, expected", [
    ("n_train", -5, "n_train must be at least 0"), ("n_val", 1.5, "n_val must be a whole number"),
    ("n_test", 10**7, "n_test must be at most"), ("seed", -1, "seed must be at least 0")])
def test_notebook_0_names_its_own_parameter_when_refusing_a_size(parameter, value, expected, tmp_path):
    with pytest.raises(ValueError, match=expected):  # not argparse's SystemExit naming --train
        prepare_data.ensure_dataset("synthetic", tmp_path / "data", **{parameter: value})
    assert not (tmp_path / "data").exists()


def test_ctrl_c_while_scoring_says_the_captions_were_written(trained_checkpoint, synthetic_dir, tmp_path,
                                                            monkeypatch, capsys):
    def interrupted(*args, **kwargs):  # Ctrl-C while METEOR's JVM runs
        raise KeyboardInterrupt
    monkeypatch.setattr(metrics, "score_captions", interrupted)
    out = tmp_path / "r.json"
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "test", "--max-images", "2", "--out", str(out)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert out.is_file() and str(out) in last and "was not written" not in last and "nothing was scored" in last


def test_no_progress_caches_features_without_a_bar(synthetic_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    assert train.main(TINY_FLAGS + ["--data-dir", str(data), "--out", str(tmp_path / "run"), "--pretrained", "no",
                                    "--train-backbone", "no", "--epochs", "1", "--max-steps-per-epoch", "1"]) == 0
    assert list((data / "cache").glob("*features*")), "the test must extract features to mean anything"
    assert "caching" not in capsys.readouterr().err
