"""--resume: a run put back where last.pt left it, with the settings a resumed run may change and those it may not."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable
from captioning import distributed
from captioning.checkpoint import (CheckpointError, RUN_COUNTERS, RUN_STATES, check_sizes, load_checkpoint,
                                   object_classes_of, save_checkpoint)
from captioning.config import Config
from vocabulary import Vocabulary
from captioning.training.run import Run, build_run, restore
from captioning.training.run_folder import PRETRAINED_NAME


# What a resumed run takes from the caller (more epochs, another machine and the precision it runs, data that
# moved); the rest from last.pt. The self-critical settings too, so that a finished run can go on with self-critical
# epochs at a rate of one's choosing (--scst-epochs 1 --scst-lr 1e-5).
RESUMABLE = ("epochs", "device", "precision", "num_workers", "data_dir", "scst_epochs", "scst_lr", "scst_samples")


def prepare(config: Config, resume: bool, given: Iterable[str] | None = None) -> Run:
    """A fresh run, or with resume the run last.pt left off (its hyperparameters win over the config's).

    given names the settings the caller chose (the command line's flags; None = all of config). A resumed run
    takes the RESUMABLE ones from them; any other given setting must agree with last.pt.
    The run's folder is config.out, wherever the checkpoint was first written.
    """
    last = Path(config.out) / "last.pt"
    if not resume:
        return build_run(config)
    if not last.exists():
        raise CheckpointError(f"--resume: no checkpoint to resume from at {last}")
    state = load_checkpoint(last)
    missing = [key for key in RUN_COUNTERS + RUN_STATES if key not in state]
    if missing:
        raise CheckpointError(f"cannot resume from {last}: it lacks {', '.join(missing)}; start a new run in "
                              f"another --out folder")
    saved = Config.from_dict(state["config"])
    merged = resumed_settings(config, saved, given, last)
    # The weights come from the checkpoint, the centre head's included, so the backbone is built without ImageNet
    # or pretrained weights; whether it trains follows what the original run decided.
    trainable = {"yes": True, "no": False, "auto": not state["encoder_pretrained"]}[saved.train_backbone]
    vocab = Vocabulary.from_dict(state["vocab"])
    check_sizes(state, saved, vocab)
    run = build_run(merged.replace(pretrained="no", pretrain_epochs=0,
                                   train_backbone="yes" if trainable else "no").validate(),
                    vocab=vocab, objects=object_classes_of(state, saved))
    check_same_data(run, state, last)
    restore(run, state)
    run.config = run.config.replace(pretrained=saved.pretrained, train_backbone=saved.train_backbone,
                                    pretrain_epochs=saved.pretrain_epochs)
    run.world_size = state.get("world_size", 1)
    if distributed.is_main():
        repair_best(run, state, last)
    return run


def resumed_settings(config: Config, saved: Config, given: Iterable[str] | None, last: Path) -> Config:
    """The settings a resumed run goes on with: saved's, but for the RESUMABLE ones that the caller gave (given: the
    names; None = all of config's) and the run folder. Any other setting given must agree with saved."""
    given = set(RESUMABLE) if given is None else set(given)
    check_resume_settings(config, saved, given - set(RESUMABLE) - {"out"}, last)
    chosen = {name: getattr(config, name) for name in RESUMABLE if name in given}
    return saved.replace(**chosen, out=config.out)


def check_resume_settings(config: Config, saved: Config, names: Iterable[str], last: Path) -> None:
    """Refuse settings given for a resumed run that differ from the ones it was trained with."""
    def same(name: str) -> bool:
        ours, theirs = getattr(config, name), getattr(saved, name)
        if name == "vocab_file" and ours and theirs:
            return Path(ours).resolve() == Path(theirs).resolve()
        if name == "weights" and saved.pretrain_epochs and ours != theirs:  # naming the CNN the run pretrained
            return Path(ours).resolve() == (last.parent / PRETRAINED_NAME).resolve()
        return ours == theirs
    differ = [f"{name} {getattr(config, name)!r} ({last.name} has {getattr(saved, name)!r})"
              for name in sorted(names) if not same(name)]
    if differ:
        raise CheckpointError(f"--resume continues the run in {last.parent} with the settings in its {last.name}, "
                              f"but you gave {'; '.join(differ)}: drop those flags, or start a new run in another "
                              f"--out folder")


def check_same_data(run: Run, state: dict[str, Any], last: Path) -> None:
    """Refuse to resume on other data than the run's: its vocabulary would make unknown words of another set's
    captions. The same annotation file in a moved folder is the same data (checkpoints from before the fingerprint
    are not checked)."""
    saved = state.get("data_fingerprint")
    if saved and run.data_fingerprint and saved != run.data_fingerprint:
        config = run.config
        raise CheckpointError(f"--resume: the split {config.train_split!r} in {config.data_dir} is not the data the "
                              f"run in {last.parent} was trained on (its annotation file differs): give the run's "
                              f"--data-dir, or start a new run in another --out folder")


def repair_best(run: Run, state: dict[str, Any], last: Path) -> None:
    """Rewrite best.pt from last.pt when the run was killed between writing the two at the end of its best epoch."""
    history = state["history"]
    if state["batches_done"] or not history or not history[-1]["best"] or history[-1]["epoch"] != state["epoch"]:
        return  # last.pt is not the end of a best epoch, so it is not what best.pt should hold
    best = run.out / "best.pt"
    # Written after last.pt, so a best.pt at least as new is that epoch's; an older one is an earlier epoch's.
    if best.is_file() and best.stat().st_mtime_ns >= last.stat().st_mtime_ns:
        return
    save_checkpoint(best, state)
    print(f"rewrote {best} from {last}: the run stopped before saving it", file=sys.stderr)
