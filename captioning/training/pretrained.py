"""The pretraining stage of a run: the CNN trained on the set's object annotations (captioning/pretraining.py) before
the first epoch, kept in the run folder and reused by a restart."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable
from captioning import distributed, pretraining
from captioning.checkpoint import CheckpointError
from captioning.config import Config
from captioning.files import check_file, write_json_atomic
from captioning.training.resume import resumed_settings
from captioning.training.run import TrainingFailed, default_resize
from captioning.training.run_folder import PRETRAINED_CONFIG, PRETRAINED_NAME


# What the pretraining depends on: a CNN pretrained by an earlier start of a run is reused only if they agree.
PRETRAINING = ("data_dir", "backbone", "image_size", "resize_size", "pretrain_epochs", "pretrain_lr",
               "pretrain_batch_size", "pretrain_small_share", "pretrain_small_scale", "object_features", "seed",
               "train_split", "val_split", "image_fit")


def check_weights_read(config: Config) -> None:
    """Refuse a weights file or name that a fresh run would never read: the CNN starts from random weights
    (pretrained no), or from the one the run pretrains (pretrain_epochs), and the user would think it started from
    theirs."""
    if config.weights == Config.weights or config.pretrained != "no":
        return
    why = f"the run pretrains its own CNN (pretrain_epochs {config.pretrain_epochs})" if config.pretrain_epochs \
        else "pretrained is 'no', so the CNN starts from random weights"
    raise ValueError(f"weights {config.weights!r} would never be read: {why}; drop --weights, or give "
                     f"--pretrain-epochs 0 --pretrained yes to start from it")


def pretrain_stage(config: Config, overwrite: bool) -> Path:
    """Before a fresh run's first epoch: train its CNN on the set's object annotations (pretrain_encoder.py), on images
    preprocessed as the captioner will see them, and write it to the run folder, where build_run loads it. Only on a
    fresh run: a resumed one has the weights in its checkpoint. A CNN that an earlier start of the run pretrained
    with the same settings (one that stopped before it saved an epoch) is used again."""
    path = Path(config.out) / PRETRAINED_NAME
    if path.exists() and not overwrite:
        check_pretrained(path, config)
        print(f"using {path}, the CNN pretrained by an earlier start of this run (--overwrite pretrains it again)",
              flush=True)
        return path
    print(f"pretraining the CNN for {config.pretrain_epochs} epochs on the objects of {config.data_dir} "
          f"(pretrain_epochs), then captioning with it", flush=True)
    resize = config.resize_size or default_resize(config)
    try:
        model, _ = pretraining.pretrain(config.data_dir, config.image_size, config.pretrain_epochs,
                                             config.backbone, config.pretrain_lr, config.pretrain_batch_size, resize,
                                             seed=config.seed, device=config.device, precision=config.precision,
                                             centres=config.object_features, train_split=config.train_split,
                                             val_split=config.val_split, fit=config.image_fit,
                                             small_epochs=config.pretrain_small_epochs,
                                             small_size=config.pretrain_small_size)
    except FloatingPointError as error:
        raise TrainingFailed(f"{error}: lower --pretrain-lr (pretrain_lr); nothing was saved in {config.out}") from None
    except KeyboardInterrupt:
        print(f"interrupted while pretraining the CNN (pretrain_epochs): nothing was saved in {config.out}; run the "
              f"same command again (without --resume) to start over", file=sys.stderr)
        raise
    write_json_atomic(Path(config.out) / PRETRAINED_CONFIG, config.replace(resize_size=resize).to_dict())
    return pretraining.save_backbone(model, path)


def pretrained_config(out: Path) -> Config | None:
    """The config of the run that pretrained out's CNN, as pretrain_stage recorded it; None without a readable
    record (a folder from before the record was kept)."""
    try:
        return Config.from_dict(json.loads(check_file(out / PRETRAINED_CONFIG, "record").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def pretraining_settings(config: Config) -> dict[str, Any]:
    """The settings that the CNN's pretraining depends on, as comparable values."""
    values = {name: getattr(config, name) for name in PRETRAINING}
    values["data_dir"] = str(Path(config.data_dir).resolve())
    values["resize_size"] = config.resize_size or default_resize(config)
    return values


def check_pretrained(path: Path, config: Config) -> None:
    """Refuse a CNN that an earlier start of the run pretrained unless its record says it was pretrained as config
    says."""
    earlier = pretrained_config(path.parent)
    ours, theirs = pretraining_settings(config), pretraining_settings(earlier) if earlier else {}
    differ = [f"{name} {theirs[name]!r} (this run: {ours[name]!r})"
              for name in PRETRAINING if theirs and theirs[name] != ours[name]]
    if earlier is None or differ:
        why = f"it was pretrained with {', '.join(differ)}" if differ else "how it was pretrained is not recorded"
        raise CheckpointError(f"{path} exists, from an earlier start of a run in {config.out}, but {why}: add "
                              f"--overwrite to pretrain again, or give another --out")


def stopped_after_pretraining(out: Path) -> bool:
    """Whether a run in out pretrained its CNN and stopped before it saved an epoch."""
    return not (out / "last.pt").exists() and (out / PRETRAINED_NAME).is_file() and pretrained_config(out) is not None


def restart_after_pretraining(config: Config, given: Iterable[str] | None) -> Config:
    """--resume of a run that stopped after pretraining its CNN, before it saved an epoch: the config its epochs
    start again with, the one the run started with (the caller's RESUMABLE settings, as for a resume)."""
    out = Path(config.out)
    config = resumed_settings(config, pretrained_config(out), given, out / PRETRAINED_CONFIG).validate()
    if distributed.is_main():
        print(f"--resume: {out} holds no last.pt, but the CNN its run pretrained: its epochs start again from it",
              flush=True)
    return config
