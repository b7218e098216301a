"""Training under torchrun: the sharded sampler, and two gloo processes on the CPU against one process."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning import distributed
import train
from captioning import training
from captioning.checkpoint import build_models, load_checkpoint
from conftest import ROOT, tiny_config
from data_loader import ImageBatchSampler
from model import decode
from test_resume_recipe import RECIPE, recipe_flags

TIMEOUT = 240  # seconds for one torchrun job: it never hangs the suite

# The tiny recipe of conftest.tiny_config as flags; a frozen random backbone, so the features come from the cache
# that both runs extract (sharded under torchrun) and no BatchNorm statistics depend on how a batch is split.
FLAGS = ["--config", "configs/synthetic.json", "--backbone", "resnet18", "--image-size", "32", "--resize-size", "32",
         "--embed-size", "32", "--hidden-size", "64", "--batch-size", "8", "--vocab-threshold", "1",
         "--precision", "fp32", "--log-every", "1", "--train-backbone", "no", "--device", "cpu",
         "--pretrain-epochs", "0", "--object-features", "false", "--no-progress"]


def torchrun(args: list[str], flags: list[str] = FLAGS, **popen) -> subprocess.Popen:
    """train.py under torchrun on two gloo processes of one thread each, in a session of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "train.py", *flags, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)


def finish(process: subprocess.Popen) -> str:
    """The job's output once it ended (killed with its workers if it outlives TIMEOUT)."""
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s: {process.communicate()[0][-3000:]}")
    return output


def entries(out: Path, kind: str) -> list[dict]:
    return [entry for entry in training.read_log(out) if entry["kind"] == kind]


def epoch_logged(out: Path) -> bool:
    """Whether the log has an epoch entry yet (a line being written may be incomplete)."""
    try:
        return bool(entries(out, "epoch"))
    except ValueError:
        return False


def copy_data(synthetic_dir: Path, target: Path) -> Path:
    """A data folder of its own (its feature cache starts empty)."""
    return Path(shutil.copytree(synthetic_dir, target, ignore=shutil.ignore_patterns("cache")))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_sampler_shards_are_disjoint_complete_and_deterministic(world_size):
    lengths = [random.Random(index).uniform(5, 15) for index in range(43)]

    def shards(epoch: int, shuffle: bool = True) -> list[list[list[int]]]:
        samplers = [ImageBatchSampler(lengths, 8, shuffle=shuffle, seed=3, rank=rank, world_size=world_size)
                    for rank in range(world_size)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        return [list(sampler) for sampler in samplers]

    single = ImageBatchSampler(lengths, 8, seed=3)
    for epoch in range(3):
        ranks = shards(epoch)
        single.set_epoch(epoch)
        assert all(len(batches) == len(ImageBatchSampler(lengths, 8, seed=3, rank=rank, world_size=world_size))
                   for rank, batches in enumerate(ranks))
        seen = [index for batches in ranks for batch in batches for index in batch]
        assert len(seen) == len(set(seen))  # disjoint
        # Complete: the one-process batches (so similar caption lengths stay together), in the same order, each
        # split over the ranks; the batch of 3 images (43 = 5 x 8 + 3) is dropped only when a rank would have none.
        expected = [batch for batch in single.batches() if len(batch) >= world_size]
        assert all(len(batches) == len(expected) for batches in ranks)  # every rank takes every step
        assert [sorted(sum((batches[step] for batches in ranks), [])) for step in range(len(expected))] \
            == [sorted(batch) for batch in expected]
        assert len(seen) == 43 - (3 if world_size > 3 else 0)
        assert shards(epoch) == ranks  # a function of seed and epoch
    assert shards(0) != shards(1)
    sampler = ImageBatchSampler(lengths, 8, seed=3, rank=1, world_size=world_size)
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == shards(1)[1][2:]  # resuming counts global batches
    ordered = [index for batches in shards(0, shuffle=False) for batch in batches for index in batch]
    assert sorted(ordered) == list(range(43))  # validation keeps every image, even a last batch of fewer than ranks


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2 is not one of the 2 ranks"):
        ImageBatchSampler([1.0] * 4, 2, rank=2, world_size=2)


def test_a_global_batch_smaller_than_the_processes_is_refused(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(ValueError, match="batch_size 2 is the global batch, shared by the 4 processes"):
        training.train(tiny_config(synthetic_dir, tmp_path, batch_size=2), progress=False)


def test_two_processes_train_like_one_with_the_same_global_batch(synthetic_dir, tmp_path, capsys, one_thread):
    one_data, two_data = copy_data(synthetic_dir, tmp_path / "data1"), copy_data(synthetic_dir, tmp_path / "data2")
    one, two = tmp_path / "one", tmp_path / "two"
    # Batches of 7 images, so that the ranks' shares differ (4 and 3 images): a loss not weighted by its share of
    # the global batch then shows.
    settings = ["--epochs", "2", "--scst-epochs", "0", "--batch-size", "7"]
    job = torchrun(["--data-dir", str(two_data), "--out", str(two), *settings])
    assert train.main([*FLAGS, "--data-dir", str(one_data), "--out", str(one), *settings]) == 0
    output = finish(job)
    assert job.returncode == 0, output[-3000:]

    # Same per-step losses. Each process's loss is a mean over its share of the words, weighted by that share, so
    # the two runs differ only in the order of float32 additions (the gradient all-reduce, the halves of each sum):
    # measured, at most 1.3e-7 relative over these twelve Adam steps. 1e-5 leaves room for other CPUs' kernels and
    # still catches the plain DDP average of the ranks' means, 2e-5 to 2e-4 off from the third step on.
    steps = {run: [entry["loss"] for entry in entries(run, "step")] for run in (one, two)}
    assert len(steps[one]) == len(steps[two]) == 12  # 40 images: 5 batches of 7 and one of 5
    assert steps[two] == pytest.approx(steps[one], rel=1e-5)
    # The sharded feature cache is the one-process cache, row for row.
    for one_array in sorted((one_data / "cache").glob("features_*.npy")):
        two_array = two_data / "cache" / one_array.name
        np.testing.assert_array_equal(np.load(two_array), np.load(one_array))
        assert json.loads(one_array.with_suffix(".json").read_text()) \
            == json.loads(two_array.with_suffix(".json").read_text())
    # Checkpoints that caption the val images the same way.
    captions = {}
    for run in (one, two):
        encoder, decoder, vocab, _ = build_models(load_checkpoint(run / "last.pt"))
        features = torch.from_numpy(np.load(next((one_data / "cache").glob("features_val_*.npy"))).astype("float32"))
        captions[run] = [vocab.clean_sentence(ids) for ids in decode(decoder, encoder.project(features)).tolist()]
    assert captions[two] == captions[one]
    # Rank 0 alone wrote the run folder: one start, one entry per step and epoch, the world size recorded.
    assert sorted(path.name for path in two.iterdir()) == [".train.lock", "best.pt", "last.pt", "train_log.jsonl",
                                                          "vocab.pkl"]
    assert [entry["world_size"] for entry in entries(two, "start")] == [2]
    assert len(entries(two, "epoch")) == 2
    assert load_checkpoint(two / "last.pt")["world_size"] == 2 and load_checkpoint(one / "last.pt")["world_size"] == 1
    assert output.count("epoch 2/2:") == 1  # the summaries of rank 0 only

    # One process goes on from the two-process run's checkpoint, and says so.
    capsys.readouterr()
    assert train.main([*FLAGS, "--data-dir", str(two_data), "--out", str(two), "--batch-size", "7", "--epochs", "3",
                       "--resume"]) == 0
    assert "on 1 processes where it ran on 2: the global batch (7 images)" in capsys.readouterr().out


def test_sigterm_saves_once_and_every_rank_exits_then_the_run_resumes(synthetic_dir, tmp_path):
    data, out = copy_data(synthetic_dir, tmp_path / "data"), tmp_path / "run"
    # From the second epoch on the last ResNet stage trains too, on images: the backbone goes through DDP, and each
    # rank's BatchNorm statistics move apart until the epoch's end gives every rank rank 0's.
    job = torchrun(["--data-dir", str(data), "--out", str(out), "--epochs", "100", "--scst-epochs", "0",
                    "--fine-tune-after", "1"])
    deadline = time.time() + TIMEOUT
    while not epoch_logged(out) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to its workers
    output = finish(job)
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)  # no worker is left in the job's session
    assert output.count("interrupted: saved") == 1, output[-3000:]
    interrupted = entries(out, "interrupted")
    assert len(interrupted) == 1
    state = load_checkpoint(out / "last.pt")
    epoch, steps = state["epoch"], state["global_step"]
    assert f"at epoch {epoch + 1}, batch {state['batches_done']};" in interrupted[0]["message"]
    assert len(entries(out, "step")) == steps  # the steps the log saw are the ones saved

    # Two processes resume it: the epoch goes on where it stopped, then one self-critical epoch of the decoder
    # from features of the fine-tuned backbone, cached by both ranks under one name.
    job = torchrun(["--data-dir", str(data), "--out", str(out), "--resume", "--epochs", str(epoch + 1),
                    "--scst-epochs", "1", "--scst-samples", "2"])
    output = finish(job)
    assert job.returncode == 0, output[-3000:]
    assert [entry["epoch"] for entry in entries(out, "resume")] == [epoch + 1]
    finished = load_checkpoint(out / "last.pt")
    assert finished["epoch"] == epoch + 2
    per_epoch = 5  # 40 images in global batches of 8
    assert [entry["step"] for entry in entries(out, "step")] == list(range(finished["global_step"]))
    assert finished["global_step"] == (epoch + 2) * per_epoch
    assert "train_reward" in finished["history"][-1] and finished["world_size"] == 2 and finished["fine_tuning"]
    assert len(list((out / "cache").glob("features_train_*.npy"))) == 1


def test_the_synthetic_recipe_resumes_under_torchrun(synthetic_dir, tmp_path, one_thread):
    data, out = copy_data(synthetic_dir, tmp_path / "data"), tmp_path / "run"
    # One process pretrains the CNN and its centre head and trains an epoch of the recipe (tiny); two go on.
    assert train.main(recipe_flags(data, out, scst_epochs=0)) == 0
    job = torchrun(["--config", str(RECIPE), "--out", str(out), "--resume", "--epochs", "2", "--scst-epochs", "1",
                    "--no-progress"], flags=[])
    output = finish(job)
    assert job.returncode == 0, output[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 3 and state["world_size"] == 2 and "train_reward" in state["history"][-1]


def worker_pids(job: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the train.py processes that torchrun started."""
    found, frontier = {}, [job.pid]
    while frontier:
        listed = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout
        for pid in map(int, listed.split()):
            frontier.append(pid)
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ranks = [entry for entry in environment if entry.startswith(b"RANK=")]
            if ranks:
                found[int(ranks[0].removeprefix(b"RANK="))] = pid
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers' ranks in /proc")
def test_a_killed_rank_leaves_the_other_saying_how_to_resume_without_a_traceback(synthetic_dir, tmp_path):
    data, out = copy_data(synthetic_dir, tmp_path / "data"), tmp_path / "run"
    job = torchrun(["--data-dir", str(data), "--out", str(out), "--epochs", "100", "--scst-epochs", "0"])
    deadline = time.time() + TIMEOUT
    while not epoch_logged(out) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    os.kill(worker_pids(job)[1], signal.SIGKILL)
    output = finish(job)
    survivor = [line for line in output.splitlines() if line.startswith("[rank0]") or "rank 0)" in line]
    assert any("another process of this torchrun job stopped" in line and "--resume" in line for line in survivor), \
        output[-3000:]
    assert not [line for line in survivor if "Traceback" in line or "gloo" in line], output[-3000:]
    assert load_checkpoint(out / "last.pt")["epoch"] >= 1
