"""The training loop: epochs of training and validation, checkpoints and early stopping; train(config) is what the
notebooks and train.py call."""
from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from captioning import distributed, metrics
from captioning.checkpoint import remove_partial_saves, save_checkpoint
from captioning.config import Config, read_value
from captioning.progress import progress as progress_bar
from captioning.runtime import check_precision, describe_precision, resolve_device
from data_loader import Batch
from model import decode
from captioning.training.losses import caption_loss, train_step
from captioning.training.pretrained import (check_weights_read, pretrain_stage, restart_after_pretraining,
                                            stopped_after_pretraining)
from captioning.training.resume import prepare
from captioning.training.run import (Run, TrainingFailed, begin_fine_tuning, checkpoint_state, encode,
                                     fine_tuning_ahead, in_scst, make_loader, use_feature_cache)
from captioning.training.run_folder import claim_run_folder, open_log, read_log, signals_deferred
from captioning.training.schedules import CosineSchedule, total_epochs
from captioning.training.self_critical import scst_step, start_scst


def train_one_epoch(run: Run, loader, log, progress: bool = True) -> float:
    """Train over one epoch (or what is left of it after a resume); returns the epoch's mean caption loss (mean
    reward in a self-critical epoch), the steps before an interruption included."""
    scst = in_scst(run)
    run.encoder.train(not scst)  # self-critical epochs leave the CNN and its BatchNorm statistics alone
    run.decoder.train()
    if scst and run.reward is None:
        start_scst(run, loader)
        log({"kind": "scst", "epoch": run.epoch + 1, "lr": run.config.scst_lr, "samples": run.config.scst_samples})
    if scst:
        for group in run.optimizer.param_groups:  # only the decoder gets gradients
            group["lr"] = run.config.scst_lr
    loader.batch_sampler.set_epoch(run.epoch, start_batch=run.batches_done)
    limit = run.config.max_steps_per_epoch or len(loader.batch_sampler)
    steps = min(limit, len(loader.batch_sampler))  # in this epoch
    bar = progress_bar(total=steps - run.batches_done, desc=f"epoch {run.epoch + 1}", disable=not progress,
                       leave=False, summary=False)  # the epoch's line follows
    for batch in loader:
        if run.batches_done >= limit:
            break
        step, loss = run.global_step, None
        if isinstance(run.scheduler, CosineSchedule) and not scst:
            run.scheduler.set_position((run.epoch + run.batches_done / steps) / run.config.epochs)
        # Under torchrun every rank takes the step or none does, and a Ctrl-C or SIGTERM stops all ranks here.
        captionless, skipped = distributed.agree_on_step(batch.captions is None, report_skipped(batch))
        # A step and the counters that record it happen together: an interrupt takes effect after the step, so a
        # resumed run neither repeats nor skips a batch (nor counts its skipped images twice).
        with signals_deferred():
            run.skipped_images += int(skipped)
            if not captionless:
                loss = (scst_step if scst else train_step)(run, batch.to(run.device, non_blocking=True))
                run.global_step += 1
                run.epoch_loss_sum, run.epoch_loss_steps = run.epoch_loss_sum + loss, run.epoch_loss_steps + 1
            run.batches_done += 1
        if loss is not None:
            if step % run.config.log_every == 0:
                values = {"reward": loss} if scst else {"loss": loss, "perplexity": math.exp(min(loss, 50))}
                log({"kind": "step", "epoch": run.epoch + 1, "step": step, **values,
                     "lr": run.optimizer.param_groups[0]["lr"]})
            bar.set_postfix({"reward" if scst else "loss": f"{loss:.3f}"})
        bar.update()
    bar.close()
    # Under torchrun: every rank validates, checkpoints and hashes (for the feature cache) the same model.
    distributed.broadcast_buffers(run.encoder, run.decoder)
    if not run.epoch_loss_steps:
        raise TrainingFailed(f"epoch {run.epoch + 1} trained no step: none of its {run.batches_done} batches held a "
                             f"readable image ({run.skipped_images} skipped so far); check the images of the split "
                             f"{run.config.train_split!r} in {run.config.data_dir}")
    return run.epoch_loss_sum / run.epoch_loss_steps


def report_skipped(batch: Batch) -> int:
    """Warn about images left out of a batch; returns how many."""
    for error in batch.skipped or []:
        tqdm.write(f"skipped unreadable image: {error}", file=sys.stderr)
    return len(batch.skipped or [])


@torch.no_grad()
def validate(run: Run, loader, progress: bool = True) -> dict[str, float]:
    """Validation loss (teacher forcing) and the caption metrics of what the decoder actually generates."""
    run.encoder.eval()
    run.decoder.eval()
    limit = math.ceil(run.config.val_max_images / run.config.batch_size) if run.config.val_max_images else None
    loss_sum, words, captions = 0.0, 0, {}
    batches = progress_bar(loader, desc="validate", disable=not progress, leave=False, summary=False)
    for index, batch in enumerate(batches):
        if limit is not None and index >= limit:
            break
        if not batch.image_ids:
            continue
        batch = batch.to(run.device)
        features = encode(run, batch)
        loss, count = caption_loss(run, batch, features)
        loss_sum, words = loss_sum + loss.item() * count.item(), words + count.item()
        sequences = decode(run.decoder, features, run.config.val_beam_size, run.config.max_len)
        captions.update(zip(batch.image_ids, map(run.vocab.clean_sentence, sequences.tolist())))
    # Under torchrun each rank captioned its share: rank 0 scores them all, and every rank gets its scores.
    loss_sum, words = distributed.all_sum([loss_sum, words])
    shares = distributed.all_gather(captions)
    return distributed.from_main(lambda: validation_scores(run, loader, loss_sum / max(words, 1), {
        image_id: caption for share in shares for image_id, caption in share.items()}))


def validation_scores(run: Run, loader, val_loss: float, captions: dict[int, str]) -> dict[str, float]:
    """The validation loss, its perplexity, and BLEU and CIDEr of the generated captions."""
    result = {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))}
    if not captions:
        raise ValueError(f"no readable images in the validation split {run.config.val_split!r} "
                         f"of {run.config.data_dir}")
    references = loader.dataset.references()
    result.update(metrics.score_captions({i: references[i] for i in captions}, captions, metrics=("BLEU", "CIDEr")))
    return result


def is_better(run: Run, score: float) -> bool:
    if run.best_score is None:
        return True
    return score < run.best_score if run.config.val_metric == "loss" else score > run.best_score


def end_of_epoch(run: Run, scores: dict[str, float], log) -> bool:
    """Schedule, best.pt, last.pt, early stopping; returns True when training should stop."""
    score = scores["val_loss" if run.config.val_metric == "loss" else run.config.val_metric]
    # A Ctrl-C in here would leave the counters advanced but best.pt unwritten; it waits until both files exist.
    with signals_deferred():
        if not in_scst(run):  # self-critical epochs run at their own fixed rate
            run.scheduler.step(score)
        improved = is_better(run, score)
        if improved:
            run.best_score, run.stale_epochs = score, 0
        else:
            run.stale_epochs += 1
        run.epoch, run.batches_done = run.epoch + 1, 0
        run.epoch_loss_sum, run.epoch_loss_steps = 0.0, 0
        entry = {"kind": "epoch", "epoch": run.epoch, **scores, "lr": run.optimizer.param_groups[0]["lr"],
                 "best": improved, "skipped_images": run.skipped_images}
        run.history.append(entry)
        if distributed.is_main():  # under torchrun the other ranks hold the same weights and counters
            state = checkpoint_state(run)
            save_checkpoint(run.out / "last.pt", state)
            log(entry)  # once the epoch is on disk (a kill before best.pt is written is repaired on resume)
            if improved:
                save_checkpoint(run.out / "best.pt", state)
    patience = run.config.early_stop_patience
    # Early stopping ends the last phase only: a plateau of the frozen phase is what fine-tuning is for.
    return bool(patience) and run.stale_epochs >= patience and not fine_tuning_ahead(run)


def run_training(run: Run, resume: bool, progress: bool, on_epoch: Callable | None = None) -> list[dict[str, Any]]:
    """The run's log, its epochs, and a save of last.pt on Ctrl-C (under torchrun: rank 0 writes, ranks agree)."""
    main, ranks = distributed.is_main(), distributed.world_size()
    if run.config.batch_size < ranks:  # every training batch would leave a rank without an image
        raise ValueError(f"batch_size {run.config.batch_size} is the global batch, shared by the {ranks} processes: "
                         f"give at least {ranks}, or run fewer processes")
    say = print if main else lambda *args, **kwargs: None
    if main:
        remove_partial_saves(run.out)  # half-written checkpoints of a killed run; last.pt and best.pt are intact
    if resume and run.epoch >= total_epochs(run.config):  # nothing left: the log and checkpoints stay as they are
        say(f"{run.out} holds a finished run ({run.epoch} of {total_epochs(run.config)} epochs): nothing to train; "
            f"to go on, give more with --resume: --epochs (cross-entropy) or --scst-epochs (self-critical)")
        return run.history
    log = open_log(run.out, fresh=not resume) if main else lambda entry: None
    if resume:
        message = f"resuming from {run.out / 'last.pt'}: epoch {run.epoch + 1}, batch {run.batches_done}, " \
                  f"step {run.global_step}"
        if ranks != run.world_size:  # batch_size is the global batch, and a resumed run cannot change it
            message += f", on {ranks} processes where it ran on {run.world_size}: the global batch " \
                       f"({run.config.batch_size} images) and so the optimisation are the same"
        say(message)
        log({"kind": "resume", "message": message, "epoch": run.epoch + 1, "step": run.global_step,
             "world_size": ranks})
    else:
        log({"kind": "start", "config": run.config.to_dict(), "device": str(run.device), "world_size": ranks})
    precision = describe_precision(run.device, run.config.precision)
    say(precision)
    log({"kind": "precision", "message": precision})
    distributed.fork_rng()
    try:
        train_epochs(run, log, progress and main, on_epoch if main else None)
    except KeyboardInterrupt:
        with signals_deferred():  # a second Ctrl-C waits for this save rather than cutting it short
            if main:
                save_checkpoint(run.out / "last.pt", checkpoint_state(run))
            message = f"interrupted: saved {run.out / 'last.pt'} at epoch {run.epoch + 1}, " \
                      f"batch {run.batches_done}; continue with --resume"
            say(message, file=sys.stderr)
            log({"kind": "interrupted", "message": message})
        raise
    return run.history


def train_epochs(run: Run, log, progress: bool, on_epoch: Callable | None = None) -> None:
    """The epoch loop: train, validate, checkpoint, maybe stop early or start fine-tuning."""
    loaders: dict[tuple[bool, bool], tuple] = {}
    while run.epoch < total_epochs(run.config):
        if fine_tuning_ahead(run) and run.epoch >= run.config.fine_tune_after:
            begin_fine_tuning(run, log)
        started, scst = time.time(), in_scst(run)
        train_loader, val_loader = phase_loaders(run, loaders, progress)
        train_loss = train_one_epoch(run, train_loader, log, progress)
        scores = validate(run, val_loader, progress)
        scores = {"train_reward" if scst else "train_loss": train_loss, **scores,
                  "seconds": round(time.time() - started, 1)}
        stop = end_of_epoch(run, scores, log)
        if distributed.is_main():
            tqdm.write(epoch_summary(run, scores))
            if on_epoch:
                on_epoch(read_log(run.out))
        if stop:
            if distributed.is_main():
                tqdm.write(f"no improvement in {run.stale_epochs} epochs: stopping early")
            break


def phase_loaders(run: Run, loaders: dict[tuple[bool, bool], tuple], progress: bool = True) -> tuple:
    """The (train, val) loaders of the phase in progress, built when the phase starts and kept until it ends: the
    annotations are parsed, and the backbone hashed for the feature cache's key, once per phase, not every epoch."""
    phase = (use_feature_cache(run), in_scst(run))  # what a loader depends on changes only between phases
    if phase not in loaders:
        loaders.clear()  # the last phase's loaders, and their worker processes, go
        loaders[phase] = (make_loader(run, "train", run.config.train_split, progress),
                          make_loader(run, "val", run.config.val_split, progress))
    return loaders[phase]


def epoch_summary(run: Run, scores: dict[str, float]) -> str:
    """One line after an epoch: its scores, how long it took and about how long the run has left."""
    shown = ("train_loss", "train_reward", "val_loss", "Bleu_4", "CIDEr")
    summary = ", ".join(f"{key} {scores[key]:.4g}" for key in shown if key in scores)
    return f"epoch {run.epoch}/{total_epochs(run.config)}: {summary}; {scores['seconds']:.0f} s, " \
           f"{format_duration(time_left(run))} left"


def time_left(run: Run) -> float:
    """Seconds the remaining epochs should take, from the mean time of the epochs of each kind run so far (a
    self-critical epoch not yet seen is assumed to take as long as a cross-entropy one)."""
    timed = [entry for entry in run.history if "seconds" in entry]
    cross_entropy = [entry["seconds"] for entry in timed if "train_loss" in entry]
    self_critical = [entry["seconds"] for entry in timed if "train_reward" in entry] or cross_entropy
    if not cross_entropy and not self_critical:
        return 0.0
    remaining_ce = max(run.config.epochs - run.epoch, 0)
    remaining_scst = total_epochs(run.config) - max(run.epoch, run.config.epochs)
    mean = statistics.fmean
    return remaining_ce * mean(cross_entropy or self_critical) + remaining_scst * mean(self_critical)


def format_duration(seconds: float) -> str:
    """"40 s", "12 min", "1.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train(config: Config | None = None, resume: bool = False, progress: bool = True,
          given: Iterable[str] | None = None, overwrite: bool = False,
          on_epoch: Callable[[list[dict[str, Any]]], None] | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """Train (or with resume, continue) a captioner; returns the per-epoch history. Ctrl-C saves and stops.

    given: with resume, the config fields the caller set on purpose (see prepare); None = all of them.
    overwrite: start a new run in a folder that holds another run's checkpoints (refused otherwise).
    on_epoch: called with the training log's entries (read_log) after every epoch, e.g. to redraw curves.
    """
    config = (config or Config()).replace(**overrides)
    # A notebook's parameters arrive as papermill passed them: "false" must not count as true.
    resume, overwrite = read_value("resume", resume, "bool"), read_value("overwrite", overwrite, "bool")
    if not resume:  # a resumed run checks its settings once merged with the checkpoint's (prepare)
        config.validate()
        check_weights_read(config)
        check_precision(resolve_device(config.device), config.precision)  # before pretraining, and the run folder
    given = None if given is None else set(given) | set(overrides)
    # Under torchrun, rank 0 holds the folder for the job.
    with distributed.main_only(claim_run_folder(Path(config.out), resume, overwrite)):
        if resume and stopped_after_pretraining(Path(config.out)):
            config, resume = restart_after_pretraining(config, given), False
        if config.pretrain_epochs and not resume:
            distributed.from_main(lambda: pretrain_stage(config, overwrite))
        run = prepare(config, resume, given)
        return run_training(run, resume, progress, on_epoch)
