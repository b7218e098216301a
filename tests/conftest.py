"""Shared fixtures: a tiny synthetic dataset and a briefly trained checkpoint, made once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prepare import synthetic
from captioning.config import Config, make_config

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(data_dir: Path, out: Path, **overrides) -> Config:
    """The synthetic recipe shrunk so that a CPU trains it in seconds."""
    values = dict(data_dir=str(data_dir), out=str(out), backbone="resnet18", image_size=32, resize_size=32,
                  embed_size=32, hidden_size=64, epochs=1, batch_size=8, vocab_threshold=1, precision="fp32",
                  log_every=1, scst_epochs=0, pretrain_epochs=0, object_features=False)
    values.update(overrides)
    if not values.get("attention", True):  # the recipe's coverage is of its attention
        values.setdefault("coverage", False)
    return make_config(ROOT / "configs" / "synthetic.json", **values)


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread when other processes want the CPU too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic COCO-format dataset (40 train, 12 val, 6 test images of 64x64)."""
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, n_train=40, n_val=12, n_test=6, seed=1, width=64, height=64)
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_dir, tmp_path_factory) -> Path:
    """best.pt of a tiny model trained for two short epochs."""
    from captioning import training

    out = tmp_path_factory.mktemp("run")
    training.train(tiny_config(synthetic_dir, out, epochs=2), progress=False)
    return out / "best.pt"


@pytest.fixture(scope="session")
def seeing_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, best.pt) of the synthetic recipe's path in small: a ResNet-18 pretrained for 6 epochs on the
    objects of 1000 images of 96 px (pretrain_epochs), then frozen while the captioner trains 15 epochs from the
    feature cache. About 100 s on 2 CPU cores: small enough for the suite, and its captions name the shapes better
    than chance (docs/EXPERIMENTS.md, 2026-12-01 (night), "a CNN that sees"). Its decoder reads the pooled feature
    (attention off): the recipe's attention decoder runs word by word and would make this run several minutes
    longer; the attention path is trained by the tiny runs and the notebooks' test."""
    from captioning import training

    data, out = tmp_path_factory.mktemp("seeing_data"), tmp_path_factory.mktemp("seeing_run")
    synthetic.generate(data, n_train=1000, n_val=100, n_test=150, seed=5, width=96, height=96)
    config = tiny_config(data, out, image_size=96, resize_size=96, embed_size=64, hidden_size=128, batch_size=16,
                         epochs=15, lr=3e-3, lr_schedule="cosine", bow_loss_weight=1.0, pretrain_epochs=6,
                         pretrain_lr=2e-3, pretrain_batch_size=16, pretrain_small_share=0,  # as when the tests'
                         # figures were measured
                         val_beam_size=1, log_every=1000, attention=False)
    training.train(config, progress=False, overwrite=True)
    return data, out / "best.pt"
