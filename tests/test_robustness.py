"""Robustness: killed or interrupted runs resume without losing or repeating work; damaged data is skipped, counted.

The kill tests run train.py and prepare_data.py as real processes and stop them with SIGKILL or SIGINT.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

import prepare_data
from prepare import synthetic
from captioning import training
from captioning.training import loop
from captioning.checkpoint import CheckpointError, load_checkpoint
from conftest import ROOT, tiny_config

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals to child processes"),
              pytest.mark.usefixtures("one_thread", "ctrl_c_acts")]


@pytest.fixture
def ctrl_c_acts():
    """Ctrl-C and SIGTERM as in a terminal, for this test and the processes it starts (which inherit what the test
    process has): a test runner started in the background may have them ignored or blocked."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    signal.signal(signal.SIGINT, previous)

TINY_FLAGS = ["--backbone", "resnet18", "--image-size", "32", "--resize-size", "32", "--embed-size", "16",
              "--hidden-size", "32", "--vocab-threshold", "1", "--precision", "fp32", "--scst-epochs", "0",
              "--pretrain-epochs", "0", "--object-features", "false", "--no-progress"]
TRAIN_IMAGES = 40  # in the synthetic_dir fixture


def train_command(data_dir: Path, out: Path, *flags: str) -> list[str]:
    """train.py on the synthetic recipe, shrunk by command-line flags."""
    return [sys.executable, "train.py", "--config", "configs/synthetic.json", "--data-dir", str(data_dir),
            "--out", str(out), *TINY_FLAGS, *flags]


class Child:
    """A command running from the repository root, its output going to files (an unread pipe could block it)."""

    def __init__(self, command: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout.txt", logs / "stderr.txt"
        # One thread: the models are tiny, and two processes' thread pools on a small CI box slow both down.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        """Poll condition; fail if the process ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the process ended (exit {self.process.returncode}) too early:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"timed out waiting for the process:\n{self.stderr[-3000:]}")
            time.sleep(0.002)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or saved."""
        self.process.kill()
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def finish(self, timeout: float = 180.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def temp_files(folder: Path) -> set[Path]:
    """Temp files of checkpoint saves in progress (or of saves a kill cut short)."""
    return set(folder.glob("*.pt*.tmp"))


def resume_line(state: dict) -> str:
    """How train.py announces where it resumes a checkpoint's run."""
    return f"epoch {state['epoch'] + 1}, batch {state['batches_done']}, step {state['global_step']}"


def test_killed_and_interrupted_training_resumes_and_finishes_the_planned_epochs(synthetic_dir, tmp_path):
    out, log = tmp_path / "run", tmp_path / "run" / training.LOG_NAME
    batches = TRAIN_IMAGES // 4
    command = train_command(synthetic_dir, out, "--epochs", "2", "--batch-size", "4", "--log-every", "1")

    # 1. SIGKILL once the first last.pt exists, most likely while best.pt is being written just after it.
    first = Child(command, tmp_path / "first")
    first.wait_until(lambda: (out / "last.pt").exists() and bool(temp_files(out) or (out / "best.pt").exists()))
    first.kill()
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["batches_done"], state["global_step"]) == (1, 0, batches)
    if (out / "best.pt").exists():
        assert load_checkpoint(out / "best.pt")["epoch"] == 1

    # 2. Resumed, then Ctrl-C in the middle of epoch 2.
    second = Child(command + ["--resume"], tmp_path / "second")
    second.wait_until(lambda: '"kind": "step"' in log.read_text().partition('"kind": "resume"')[2])
    second.process.send_signal(signal.SIGINT)
    assert second.finish() == 130
    assert "interrupted: saved" in second.stderr and "--resume" in second.stderr
    assert "Traceback" not in second.stderr
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and 0 < state["batches_done"] < batches
    assert state["global_step"] == batches + state["batches_done"]  # the weights hold exactly the batches counted
    assert load_checkpoint(out / "best.pt")["epoch"] == 1  # rewritten on resume if the kill prevented it

    # 3. Resumed with neither --epochs nor the model flags: the checkpoint's plan (2 epochs) beats the recipe's 12.
    third = Child([sys.executable, "train.py", "--config", "configs/synthetic.json", "--out", str(out), "--resume",
                   "--no-progress"], tmp_path / "third")
    assert third.finish() == 0, third.stderr
    assert f"resuming from {out / 'last.pt'}: {resume_line(state)}" in third.stdout
    assert "Traceback" not in third.stderr
    final = load_checkpoint(out / "last.pt")
    assert (final["epoch"], final["batches_done"]) == (2, 0)
    assert final["global_step"] == 2 * batches  # nothing lost, nothing trained twice
    assert [entry["epoch"] for entry in final["history"]] == [1, 2]
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == [entry["epoch"] for entry in final["history"] if entry["best"]][-1]
    assert best["best_score"] == max(entry["CIDEr"] for entry in final["history"])
    kinds = [entry["kind"] for entry in training.read_log(out)]
    assert kinds.count("resume") == 2 and kinds.count("interrupted") == 1 and kinds.count("epoch") == 2
    assert not temp_files(out)  # the half-written save of the killed run was cleaned up


def fixed_scores(run, loader, progress=True) -> dict[str, float]:
    """Stands in for validation where only the checkpoint bookkeeping is under test."""
    return {"val_loss": 1.0, "val_perplexity": 2.7, "CIDEr": 0.5, "Bleu_4": 0.1}


def quick_config(data_dir: Path, out: Path, **overrides):
    return tiny_config(data_dir, out, embed_size=16, hidden_size=32, **overrides)


def test_an_interrupt_during_a_step_takes_effect_after_it(synthetic_dir, tmp_path, monkeypatch):
    real_step = loop.train_step

    def step_then_ctrl_c(run, batch):
        loss = real_step(run, batch)
        os.kill(os.getpid(), signal.SIGINT)  # after the optimizer step, before the counters record it
        return loss
    monkeypatch.setattr(loop, "train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        training.train(quick_config(synthetic_dir, tmp_path), progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["batches_done"] == state["global_step"] == 1


def test_an_interrupt_while_checkpoints_are_written_waits_for_both(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", fixed_scores)
    real_save, calls = loop.save_checkpoint, []

    def ctrl_c_then_save(path, state):
        calls.append(path)
        if len(calls) == 1:  # the end of epoch 1 writes last.pt, then best.pt
            os.kill(os.getpid(), signal.SIGINT)
        real_save(path, state)
    monkeypatch.setattr(loop, "save_checkpoint", ctrl_c_then_save)
    with pytest.raises(KeyboardInterrupt):
        training.train(quick_config(synthetic_dir, tmp_path, epochs=2, max_steps_per_epoch=1), progress=False)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    last = load_checkpoint(tmp_path / "last.pt")
    assert (last["epoch"], last["batches_done"], last["best_score"]) == (1, 0, 0.5)


def test_resume_rewrites_a_best_checkpoint_the_kill_prevented(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", fixed_scores)
    config = quick_config(synthetic_dir, tmp_path, epochs=1, max_steps_per_epoch=1)
    training.train(config, progress=False)
    (tmp_path / "best.pt").unlink()  # as if killed between writing last.pt and best.pt
    (tmp_path / "best.pt1234.tmp").write_bytes(b"half a checkpoint")
    training.train(config, resume=True, progress=False)  # nothing left to train
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert not temp_files(tmp_path)


def test_a_moved_run_and_dataset_resume_in_their_new_places(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", fixed_scores)
    shutil.copytree(synthetic_dir, tmp_path / "data")
    training.train(quick_config(tmp_path / "data", tmp_path / "run", epochs=1, max_steps_per_epoch=1), progress=False)
    (tmp_path / "data").rename(tmp_path / "moved_data")
    (tmp_path / "run").rename(tmp_path / "moved_run")
    training.train(quick_config(tmp_path / "moved_data", tmp_path / "moved_run", epochs=2, max_steps_per_epoch=1),
                resume=True, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written where the run used to be
    state = load_checkpoint(tmp_path / "moved_run" / "last.pt")
    assert state["epoch"] == 2 and state["global_step"] == 2
    assert (state["config"]["out"], state["config"]["data_dir"]) == (str(tmp_path / "moved_run"),
                                                                    str(tmp_path / "moved_data"))


def test_a_training_epoch_completes_over_corrupt_and_missing_images(tmp_path, capsys):
    data = tmp_path / "data"
    synthetic.generate(data, n_train=100, n_val=4, n_test=0, seed=5, width=32, height=32)
    images = data / "images" / "train"
    truncated, missing = images / "synthetic_train_000007.jpg", images / "synthetic_train_000042.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing.unlink()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(images / "synthetic_train_000050.jpg")  # tiny but readable
    history = training.train(quick_config(data, tmp_path / "run", batch_size=25), progress=False)
    assert history[0]["skipped_images"] == 2
    epochs = [entry for entry in training.read_log(tmp_path / "run") if entry["kind"] == "epoch"]
    assert [entry["skipped_images"] for entry in epochs] == [2]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 4  # every batch trained
    err = capsys.readouterr().err
    assert err.count("skipped unreadable image") == 2
    assert truncated.name in err and missing.name in err


def test_prepare_data_reruns_cleanly_after_a_kill(tmp_path):
    options = ["--train", "400", "--val", "10", "--test", "0", "--width", "32", "--height", "32", "--seed", "3"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    child = Child([sys.executable, "prepare_data.py", "synthetic", "--out", str(killed), *options], tmp_path / "logs")
    train_images = killed / "images" / "train"
    child.wait_until(lambda: train_images.is_dir() and len(os.listdir(train_images)) >= 20)
    child.kill()
    assert not (killed / "annotations" / "captions_train.json").exists()  # it was stopped mid-generation
    assert prepare_data.main(["synthetic", "--out", str(killed), *options]) == 0
    assert prepare_data.main(["synthetic", "--out", str(clean), *options]) == 0
    files = {path.relative_to(killed) for path in killed.rglob("*") if path.is_file()}
    assert files == {path.relative_to(clean) for path in clean.rglob("*") if path.is_file()}
    assert len(files) == 410 + 3 * 3 + 1  # images, captions, instances and stuff per split, synonyms.txt
    differing = [name for name in files if (killed / name).read_bytes() != (clean / name).read_bytes()]
    assert not differing


def test_a_run_resumed_on_other_data_is_refused(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", fixed_scores)
    training.train(quick_config(synthetic_dir, tmp_path / "run", epochs=1, max_steps_per_epoch=1), progress=False)
    shutil.copytree(synthetic_dir, tmp_path / "other")
    captions = tmp_path / "other" / "annotations" / "captions_train.json"
    data = json.loads(captions.read_text())
    data["annotations"] = [{**annotation, "caption": "zebras " + annotation["caption"]} for annotation in
                           data["annotations"]]
    captions.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not the data the run .* was trained on"):
        training.train(quick_config(tmp_path / "other", tmp_path / "run", epochs=2, max_steps_per_epoch=1),
                       resume=True, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


# Runs a command as python would, with a Ctrl-C arriving while it imports argparse, which every command does before
# torch (seconds of loading): at a set point, where a signal sent after a delay would race the imports.
CTRL_C_WHILE_IMPORTING = """
import runpy, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "argparse":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("command", ["train.py", "evaluate.py", "caption.py", "prepare_data.py",
                                     "pretrain_encoder.py"])
def test_ctrl_c_while_a_command_starts_ends_it_quietly(command, tmp_path):
    child = Child([sys.executable, "-c", CTRL_C_WHILE_IMPORTING, command], tmp_path)
    child.process.wait(timeout=60)
    assert child.process.returncode in (130, -signal.SIGINT)
    assert child.stderr_path.read_text() == ""
