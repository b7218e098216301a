"""Training: config -> vocabulary, loaders, encoder + decoder -> checkpoints (last.pt, best.pt) and a training log.

    python train.py --config configs/synthetic.json --data-dir data/synthetic --out models/
    python train.py --config configs/synthetic.json --out models/ --resume
    torchrun --standalone --nproc_per_node 2 train.py --config configs/synthetic.json --out models/

Under torchrun the processes train one model with DistributedDataParallel (distributed.py); batch_size is the
global batch.

`train(config)` is what the notebooks call; the command line is a thin wrapper around it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import pickle
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: one run per folder is then up to the user
    fcntl = None

import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from tqdm.auto import tqdm

import distributed
import metrics
import pretrain_encoder
from annotations import annotation_path, image_path, load_coco
from checkpoint import (RUN_COUNTERS, RUN_STATES, CheckpointError, check_sizes, load_checkpoint, load_weights,
                        make_decoder, object_classes_of, remove_partial_saves, save_checkpoint)
from config import Config, add_config_arguments, config_from_args, read_value
from data_loader import Batch, ImageLoadError, Preprocess, get_loader, load_image
from files import check_file, write_json_atomic
from model import DecoderRNN, EncoderCNN, PretrainedWeightsUnavailable, decode, object_classes, weights_resize
from progress import progress as progress_bar
from runtime import autocast, autocast_dtype, check_precision, describe_precision, resolve_device
from vocabulary import Vocabulary, get_vocabulary, is_punctuation

LOG_NAME = "train_log.jsonl"
LOCK_NAME = ".train.lock"  # held (flock) by the run writing to the folder
PRETRAINED_NAME = "encoder_pretrained.pth"  # the CNN pretrained by a run with pretrain_epochs, in its folder
PRETRAINED_CONFIG = "encoder_pretrained.json"  # the config of the run that pretrained it, written just before it
# What the pretraining depends on: a CNN pretrained by an earlier start of a run is reused only if they agree.
PRETRAINING = ("data_dir", "backbone", "image_size", "resize_size", "pretrain_epochs", "pretrain_lr",
               "pretrain_batch_size", "object_features", "seed", "train_split", "val_split", "image_fit")
# What a resumed run takes from the caller (more epochs, another machine and the precision it runs, data that
# moved); the rest from last.pt. The self-critical settings too, so that a finished run can go on with self-critical
# epochs at a rate of one's choosing (--scst-epochs 1 --scst-lr 1e-5).
RESUMABLE = ("epochs", "device", "precision", "num_workers", "data_dir", "scst_epochs", "scst_lr", "scst_samples")


class TrainingFailed(RuntimeError):
    """Training cannot produce a usable model (a loss that is no longer a number, an epoch without a step)."""


# A loss beyond this has run away even while it is a number: a cross-entropy of 1e6 gives the right word a probability
# of e^-1000000, and a self-critical loss, at most (reward gap) x (max_len words) x (-log p), cannot reach it either
# without such probabilities. Weights that a learning rate of 1e30 throws to 1e30 produce losses like that.
MAX_LOSS = 1e6


def check_finite(run: "Run", value: float, what: str) -> None:
    """Stop the run when a loss stops being a finite number, or runs away beyond MAX_LOSS: the weights are no longer
    usable, so nothing of this epoch is saved (last.pt and best.pt keep the last good epoch, if any)."""
    if not math.isfinite(value) or abs(value) > MAX_LOSS:
        raise TrainingFailed(f"the {what} became {value} at epoch {run.epoch + 1}, step {run.global_step}: training "
                             f"diverged (is the learning rate, {run.optimizer.param_groups[0]['lr']:g}, too high?); "
                             f"nothing of this epoch was saved in {run.out}")


class CosineSchedule:
    """Cosine decay of each parameter group's learning rate, from its configured value at the first step of the run
    to zero after the last cross-entropy epoch, set before every step from the run's position (epoch, batch), so that
    a resumed run continues on the same curve. For a fixed budget of epochs; with --resume and more --epochs, the
    curve stretches.

    Speaks ReduceLROnPlateau's language for the rest of train.py: step(score) after an epoch (nothing to do here),
    state_dict and load_state_dict.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def set_position(self, fraction: float) -> None:
        """Set the learning rates for a step taken this far (0 to 1) into the run."""
        factor = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self, score: float | None = None) -> None:
        """End of an epoch: the learning rate follows the step position, not the validation score."""

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])


@dataclass
class Run:
    """Everything one training run holds while it goes."""

    config: Config
    device: torch.device
    vocab: Vocabulary
    encoder: EncoderCNN
    decoder: DecoderRNN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | CosineSchedule
    scaler: torch.amp.GradScaler
    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # batches of that epoch already trained (non-zero only after an interruption)
    global_step: int = 0
    best_score: float | None = None
    stale_epochs: int = 0  # epochs since the best validation score
    fine_tuning: bool = False
    encoder_pretrained: bool = False  # whether the backbone started from ImageNet weights
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_images: int = 0
    epoch_loss_sum: float = 0.0  # caption loss summed over the steps of the epoch in progress, across a resume
    epoch_loss_steps: int = 0
    reward: metrics.CorpusCider | None = None  # built when self-critical training starts (not checkpointed)
    scst_skip: set[int] = field(default_factory=set)  # word ids the reward leaves out
    world_size: int = 1  # processes the run last trained on (torchrun), as its checkpoint records
    replica: tuple | None = None  # under torchrun: (phase, the DistributedDataParallel of what the phase trains)

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def build_run(config: Config, vocab: Vocabulary | None = None, objects: int | None = None) -> Run:
    """Vocabulary (built or loaded unless given), models, optimizer and schedule for a fresh run.

    objects: the classes of the centre head when its weights come from a checkpoint (prepare); None reads them from
    the weights file.
    """
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    check_precision(device, config.precision)
    if not config.resize_size:  # resolved once, so that checkpoints and the feature cache hold the number
        config = config.replace(resize_size=default_resize(config))
    # The CNN this run pretrained on the synthetic objects (pretrain_stage) is used as ImageNet weights are: frozen
    # unless train_backbone says yes. A centre head the weights lack is found before anything is written.
    weights = str(Path(config.out) / PRETRAINED_NAME) if config.pretrain_epochs else config.weights
    if objects is None:
        objects = object_classes(weights) if config.object_features else 0
    # Validation first runs after a whole epoch: a val split that is missing, empty or unreadable must not take that
    # long to show.
    val = load_coco(annotation_path(config.data_dir, config.val_split))
    if vocab is None:
        vocab = distributed.from_main(lambda: get_vocabulary(  # built and saved by rank 0 alone under torchrun
            config.vocab_path, config.vocab_threshold, [annotation_path(config.data_dir, config.train_split)],
            config.vocab_from_file))
    check_readable_split(val, config.data_dir, config.val_split)
    encoder = EncoderCNN(config.embed_size, config.backbone, "yes" if config.pretrain_epochs else config.pretrained,
                         config.train_backbone, weights, config.attention, objects)
    decoder = make_decoder(config, vocab)
    encoder.to(device, memory_format=torch.channels_last)
    decoder.to(device)
    # Frozen backbone parameters sit in the optimizer too (Adam skips them while they get no gradient), so the
    # optimizer's layout never changes when fine-tuning starts and a resumed run loads its state unchanged.
    cnn = encoder.backbone_parameters()
    head = [parameter for parameter in encoder.parameters() if all(parameter is not other for other in cnn)]
    head += list(decoder.parameters())
    optimizer = torch.optim.Adam([{"params": head, "lr": config.lr}, {"params": cnn, "lr": config.backbone_lr}],
                                 weight_decay=config.weight_decay, fused=True)  # one kernel for all tensors
    if config.lr_schedule == "cosine":
        scheduler = CosineSchedule(optimizer)
    else:
        mode = "min" if config.val_metric == "loss" else "max"
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=config.lr_factor,
                                                               patience=config.lr_patience)
    # fp16 (asked for, or auto on a GPU without bf16) needs its gradients scaled; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device, config.precision) is torch.float16)
    return Run(config, device, vocab, encoder, decoder, optimizer, scheduler, scaler,
               encoder_pretrained=encoder.pretrained)


def default_resize(config: Config) -> int:
    """resize_size 0: the weights' own evaluation resize when ImageNet weights may be used, else 8/7 of the crop."""
    if config.pretrained == "no":
        return round(config.image_size * 8 / 7)
    return weights_resize(config.backbone, config.weights, config.image_size)


def check_readable_split(coco: COCO, data_dir: str | Path, split: str) -> None:
    """Raise ValueError unless at least one image of the split can be read (it stops at the first readable one, so
    a healthy split costs one image)."""
    first_error = None
    for image in coco.dataset["images"]:
        try:
            load_image(image_path(data_dir, split, image["file_name"]))
            return
        except ImageLoadError as error:
            first_error = first_error or error
    raise ValueError(f"no image of the split {split!r} in {data_dir} can be read ({len(coco.dataset['images'])} "
                     f"tried; the first: {first_error})")


def checkpoint_state(run: Run) -> dict[str, Any]:
    """The plain dict written to last.pt / best.pt (its keys: checkpoint.py)."""
    return {"encoder": run.encoder.state_dict(), "decoder": run.decoder.state_dict(),
            "config": run.config.to_dict(), "vocab": run.vocab.to_dict(),
            **{name: getattr(run, name) for name in RUN_COUNTERS},
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
            "metrics": run.history[-1] if run.history else {}, "world_size": distributed.world_size()}


def restore(run: Run, state: dict[str, Any]) -> None:
    """Put a run back where a checkpoint left it: weights, optimizer, schedule, counters."""
    load_weights(run.encoder, state["encoder"], "encoder")
    load_weights(run.decoder, state["decoder"], "decoder")
    if state["fine_tuning"]:
        start_fine_tuning(run)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when the run did not scale gradients (fp32, bf16); resumed in fp16, it starts now
        run.scaler.load_state_dict(state["scaler"])
    for name in RUN_COUNTERS:
        setattr(run, name, state[name])
    torch.set_rng_state(state["torch_rng"])


def start_fine_tuning(run: Run) -> None:
    """Unfreeze the deepest ResNet stages; they train at backbone_lr, the rest of the model at lr."""
    run.encoder.set_backbone_trainable(True, last_stages=run.config.fine_tune_blocks)
    run.fine_tuning = True


def fine_tuning_ahead(run: Run) -> bool:
    """Whether the recipe plans a fine-tuning phase that has not started yet."""
    return 0 <= run.config.fine_tune_after < run.config.epochs and not run.fine_tuning


def begin_fine_tuning(run: Run, log) -> None:
    """Start the fine-tuning phase at its documented rate: the plateau schedule has been cutting every group's
    rate, the backbone's too while it was frozen, so that one starts again at backbone_lr. The phase also gets a
    fresh patience: its first epochs need not beat the frozen phase's best for the run to go on."""
    start_fine_tuning(run)
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.optimizer.param_groups[1]["lr"] = run.config.backbone_lr
        run.scheduler.num_bad_epochs = 0
    run.stale_epochs = 0
    log({"kind": "fine_tune", "epoch": run.epoch + 1, "stages": run.config.fine_tune_blocks,
         "lr": run.optimizer.param_groups[0]["lr"], "backbone_lr": run.optimizer.param_groups[1]["lr"]})


def make_loader(run: Run, mode: str, split: str):
    """A loader over images for one split (training transform in train mode)."""
    config = run.config
    transform = Preprocess.of(config, train=mode == "train")
    features = None
    if use_feature_cache(run):
        from features import feature_store  # only needed with a frozen backbone
        # A backbone this run trained has features of its own, which belong with the run, not with the data.
        cache_dir = run.out / "cache" if in_scst(run) and backbone_trained_here(run) else None
        features = feature_store(run.encoder, config, split, run.device, cache_dir=cache_dir)
    return get_loader(transform, mode=mode, batch_size=config.batch_size, num_workers=config.num_workers,
                      data_dir=config.data_dir, split=split, vocab=run.vocab, features=features,
                      seed=config.seed, max_caption_length=config.max_caption_length,
                      pin_memory=run.device.type == "cuda", rank=distributed.rank(),
                      world_size=distributed.world_size())


def use_feature_cache(run: Run) -> bool:
    """Cached pooled features stand in for images while nothing before the projection layer is trained: with a
    frozen backbone, and in the self-critical epochs, which train the decoder alone."""
    return run.config.feature_cache == "auto" and (not run.encoder.backbone_trainable or in_scst(run))


def backbone_trained_here(run: Run) -> bool:
    """Whether this run changed the backbone's weights (trained from scratch, or fine-tuned)."""
    return run.encoder.backbone_trainable or run.fine_tuning


def encode(run: Run, batch: Batch) -> torch.Tensor:
    """(images, embed) features for a batch of images or of cached pooled features."""
    if batch.holds_features:
        return run.encoder.project(batch.images)
    return run.encoder(batch.images, run.config.precision)


def caption_loss(run: Run, batch: Batch, features: torch.Tensor, inputs: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy per word (position 0, the trivial <start>, is not scored) and the number of words.

    inputs, when given, replaces the teacher-forced input words (scheduled sampling); the targets stay the captions.
    """
    words = batch.captions if inputs is None else inputs
    hidden = run.decoder.hidden_states(features[batch.image_index], words, batch.lengths)  # (captions, T, hidden)
    targets = batch.captions[:, 1:]
    mask = targets != run.vocab.pad_index
    # The output layer (hidden x vocab, the largest matrix product) runs only where a word is scored, not on padding.
    loss = F.cross_entropy(run.decoder.scores(hidden[:, 1:][mask]).float(), targets[mask])  # (words, vocab) scores
    return loss, mask.sum()


def sampled_inputs(run: Run, batch: Batch, features: torch.Tensor) -> torch.Tensor | None:
    """Scheduled sampling: replace input words by the model's own predictions with a probability that ramps up
    linearly over the epochs to config.scheduled_sampling (one extra teacher-forced pass, no gradient)."""
    ramp = run.epoch / max(run.config.epochs - 1, 1)
    probability = run.config.scheduled_sampling * min(ramp, 1.0)
    if probability <= 0:
        return None
    with torch.no_grad():
        predicted = run.decoder(features[batch.image_index], batch.captions, batch.lengths).argmax(-1)
    # predicted[:, t] is the model's guess for captions[:, t], i.e. what it would feed itself at position t.
    replace = torch.rand(predicted.shape, device=predicted.device) < probability
    replace[:, 0] = False  # <start> stays
    replace &= batch.captions != run.vocab.pad_index
    return torch.where(replace, predicted, batch.captions)


def bow_loss(run: Run, batch: Batch, features: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of predicting, from the image alone, which words occur in its captions."""
    targets = torch.zeros(features.size(0), len(run.vocab), device=features.device)
    targets[batch.image_index.unsqueeze(1).expand_as(batch.captions), batch.captions] = 1.0
    targets[:, [run.vocab.pad_index, run.vocab.start_index, run.vocab.end_index, run.vocab.unk_index]] = 0.0
    return F.binary_cross_entropy_with_logits(run.decoder.bow_logits(features).float(), targets)


def total_epochs(config: Config) -> int:
    """The cross-entropy epochs, then the self-critical ones."""
    return config.epochs + config.scst_epochs


def in_scst(run: Run) -> bool:
    """Whether the epoch in progress is one of the config.scst_epochs after the cross-entropy ones."""
    return run.epoch >= run.config.epochs


def reward_tokens(run: Run, ids: Iterable[int]) -> str:
    """A caption as the reward scores it: word ids up to <end>, without special tokens and punctuation, then <end>
    itself as a word when the caption has one.

    <end> is scored as the self-critical paper does (Rennie et al. 2017, appendix E): without it, a caption cut off
    after "on a" loses only the n-grams of its last words, and self-critical training learned to stop there; with
    it, "a <end>" is an n-gram no reference has.
    """
    skip, words = run.scst_skip, []
    for index in ids:
        if index == run.vocab.end_index:
            words.append(str(index))
            break
        if index not in skip:
            words.append(str(index))
    return " ".join(words)


def start_scst(run: Run, loader) -> None:
    """Build the reward: CIDEr with document frequencies from the training captions, as word ids."""
    vocab = run.vocab
    run.scst_skip = {vocab.pad_index, vocab.start_index, vocab.end_index} | {
        vocab(word) for word in vocab.to_dict()["words"] if is_punctuation(word)}
    dataset = loader.dataset
    run.reward = metrics.CorpusCider([reward_tokens(run, [vocab(word) for word in words] + [vocab.end_index])
                                      for words in dataset.captions[image_id]] for image_id in dataset.image_ids)


def scst_step(run: Run, batch: Batch) -> float:
    """One step of self-critical sequence training (Rennie et al. 2017) of the decoder; returns the mean reward.

    The CNN and the projection stay as they are: features come without a graph. Each image's caption is sampled
    config.scst_samples times; a sample's reward is its CIDEr against the image's references, and its baseline the
    mean reward of the image's other samples (Luo 2020), so no greedy decode is needed. The loss raises the
    log-probability of the samples that beat their baseline and lowers that of the others: it trains the decoder
    for the metric, where cross-entropy trains it to imitate every reference wording at once.
    """
    samples = run.config.scst_samples
    with torch.no_grad(), autocast(run.device, run.config.precision):
        features = encode(run, batch).float()
    words, log_probs = replicated(run, run.decoder.sample_with_log_probs,
                                  features.repeat_interleave(samples, dim=0), run.config.max_len)
    references: list[list[str]] = [[] for _ in range(features.size(0))]
    for caption, image in zip(batch.captions.tolist(), batch.image_index.tolist()):
        references[image].append(reward_tokens(run, caption[1:]))
    rewards = torch.tensor([run.reward.score(reward_tokens(run, sample), references[row // samples])
                            for row, sample in enumerate(words.tolist())], device=features.device).view(-1, samples)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)
    loss = -((rewards - baseline).view(-1) * log_probs.sum(dim=1)).mean()
    # Under torchrun: each rank's share of the global batch's mean (see global_loss).
    loss, (mean_loss,) = global_loss(run, [(loss, rewards.numel())])
    check_finite(run, mean_loss, "self-critical loss")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.decoder.parameters(), run.config.grad_clip)
    run.optimizer.step()
    reward_sum, count = distributed.all_sum([rewards.mean().item() * rewards.numel(), rewards.numel()])
    return reward_sum / count


def train_step(run: Run, batch: Batch) -> float:
    """One optimisation step; returns the caption loss.

    The forward pass runs under autocast (config.precision: bf16 on CPUs with AMX/AVX512-BF16, AMP on CUDA), the
    decoder included: its output layer is the largest matrix product of a step from cached features. Weights, their
    gradients and Adam stay fp32, and the losses are computed in fp32.
    """
    with autocast(run.device, run.config.precision):
        loss, words, bow = replicated(run, step_losses, run, batch)
    weight = run.config.bow_loss_weight
    terms = [(loss, words.item())] + ([(weight * bow, len(batch.image_ids))] if weight else [])
    total, means = global_loss(run, terms)
    check_finite(run, sum(means), "training loss")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    if run.config.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_([p for group in run.optimizer.param_groups for p in group["params"]],
                                       run.config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return means[0]


def step_losses(run: Run, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The caption loss of a batch, its number of words, and its bag-of-words loss (None when not trained)."""
    features = encode(run, batch)
    loss, words = caption_loss(run, batch, features, sampled_inputs(run, batch, features))
    return loss, words, bow_loss(run, batch, features) if run.config.bow_loss_weight else None


def global_loss(run: Run, terms: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, list[float]]:
    """The loss to back-propagate from (mean, count) terms, and each term's mean over the global batch.

    DistributedDataParallel averages the ranks' gradients, but a rank's mean is over its own share of the words
    (or images): weighting it by share / global count x world size makes that average the gradient of the global
    batch's mean, as one process would compute it. With one process every weight is 1.
    """
    sums = distributed.all_sum([value for mean, count in terms for value in (mean.item() * count, count)])
    totals = sums[1::2]
    loss = sum(mean * (count / total * distributed.world_size()) for (mean, count), total in zip(terms, totals))
    return loss, [value / total for value, total in zip(sums[0::2], totals)]


def replicated(run: Run, compute, *args):
    """compute(*args) inside DistributedDataParallel's forward under torchrun, so that backward averages the
    gradients of what the phase trains over the ranks; a plain call otherwise."""
    if not distributed.active():
        return compute(*args)
    scst, backbone = in_scst(run), run.encoder.backbone_trainable
    if run.replica is None or run.replica[0] != (scst, backbone):  # a new phase: DDP's parameters are fixed
        run.replica = None
        gc.collect()  # the last phase's DDP, whose gradient hooks must go before the new one adds its own
        # The self-critical step trains the decoder alone, its bag-of-words head unused; a frozen backbone (or one
        # the cache stands in for) has no gradients, which DDP leaves out by itself.
        parts = [run.decoder]
        if not scst:
            parts += [run.encoder.embed] + ([run.encoder.embed_cells] if run.encoder.attention else [])
            parts += [run.encoder.backbone] if backbone else []
        unused = scst or not run.config.bow_loss_weight
        run.replica = ((scst, backbone), distributed.replicate(parts, find_unused_parameters=unused))
    return run.replica[1](compute, *args)


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


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on them as usual (main thread only)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    # Python-level handlers rather than a signal mask: a mask covers one thread, and any of torch's threads
    # can receive a signal that Python then raises in the main thread.
    received: list[int] = []
    previous = {number: signal.signal(number, lambda caught, frame: received.append(caught))
                for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) is not None}  # None: a handler set outside Python, left alone
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


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


def open_log(out: Path, fresh: bool):
    """Append JSON lines to out/train_log.jsonl (emptied first for a fresh run); returns a writer of one entry."""
    out.mkdir(parents=True, exist_ok=True)
    path = check_file(out / LOG_NAME, "the training log")
    if fresh:
        path.write_text("")

    def log(entry: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **entry}) + "\n")
    return log


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The training log's entries (for the notebooks' plots)."""
    path = Path(out) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


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
        model, _ = pretrain_encoder.pretrain(config.data_dir, config.image_size, config.pretrain_epochs,
                                             config.backbone, config.pretrain_lr, config.pretrain_batch_size, resize,
                                             seed=config.seed, device=config.device, precision=config.precision,
                                             centres=config.object_features, train_split=config.train_split,
                                             val_split=config.val_split, fit=config.image_fit)
    except KeyboardInterrupt:
        print(f"interrupted while pretraining the CNN (pretrain_epochs): nothing was saved in {config.out}; run the "
              f"same command again (without --resume) to start over", file=sys.stderr)
        raise
    write_json_atomic(Path(config.out) / PRETRAINED_CONFIG, config.replace(resize_size=resize).to_dict())
    return pretrain_encoder.save_backbone(model, path)


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


@contextlib.contextmanager
def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold the run folder for this run: one training run at a time (a lock the operating system releases when the
    process ends, however it ends), and a new run never replaces another run's checkpoints unless asked to."""
    if resume and not out.is_dir():
        raise CheckpointError(f"--resume: no checkpoint to resume from at {out / 'last.pt'}")
    out.mkdir(parents=True, exist_ok=True)
    with open(check_file(out / LOCK_NAME, "the run folder's lock"), "a+") as lock:
        if fcntl is not None:  # not on Windows
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                owner = lock.read().strip() or "another process"
                raise CheckpointError(f"another training run ({owner}) is using {out}: wait for it to finish, "
                                      f"or give another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        settle_replaced_run(out)  # left by a run killed before it could
        existing = [name for name in ("last.pt", "best.pt") if (out / name).exists()]
        if existing and not resume and not overwrite:
            raise CheckpointError(f"{out} holds a training run already ({', '.join(existing)}): continue it with "
                                  f"--resume, give another --out, or add --overwrite to replace it")
        if existing and not resume:
            set_run_aside(out)
        try:
            yield
        finally:
            settle_replaced_run(out)


REPLACING_NAME, REPLACED_NAME = ".replacing_run", ".replaced_run"  # in a run folder, the run --overwrite replaces


def set_run_aside(out: Path) -> None:
    """Move the run in out aside whole (--overwrite), so that the new run never mixes its files with the old run's;
    settle_replaced_run deletes it once the new run has a checkpoint, or puts it back if it ends without one."""
    moving = out / REPLACING_NAME
    moving.mkdir()
    for entry in list(out.iterdir()):
        if entry.name not in (LOCK_NAME, REPLACING_NAME):
            entry.rename(moving / entry.name)
    moving.rename(out / REPLACED_NAME)  # only a whole run is ever "replaced"


def settle_replaced_run(out: Path) -> None:
    """The run that --overwrite set aside: gone once the new run wrote last.pt, back in place otherwise."""
    moving, aside = out / REPLACING_NAME, out / REPLACED_NAME
    if moving.is_dir():  # killed while setting the old run aside: everything in out is the old run's
        for entry in list(moving.iterdir()):
            entry.rename(out / entry.name)
        moving.rmdir()
    if not aside.is_dir():
        return
    if (out / "last.pt").exists():  # the new run's: the old run is replaced
        shutil.rmtree(aside)
        return
    for entry in list(out.iterdir()):  # what the new run wrote before it failed: it ends with nothing to keep
        if entry.name not in (LOCK_NAME, REPLACED_NAME):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in list(aside.iterdir()):
        entry.rename(out / entry.name)
    aside.rmdir()
    print(f"the new run saved no checkpoint, so the run it was to replace is back in {out}", file=sys.stderr)


def run_training(run: Run, resume: bool, progress: bool, on_epoch: Callable | None = None) -> list[dict[str, Any]]:
    """The run's log, its epochs, and a save of last.pt on Ctrl-C (under torchrun: rank 0 writes, ranks agree)."""
    main, ranks = distributed.is_main(), distributed.world_size()
    if run.config.batch_size < ranks:  # every training batch would leave a rank without an image
        raise ValueError(f"batch_size {run.config.batch_size} is the global batch, shared by the {ranks} processes: "
                         f"give at least {ranks}, or run fewer processes")
    say = print if main else lambda *args, **kwargs: None
    if main:
        remove_partial_saves(run.out)  # half-written checkpoints of a killed run; last.pt and best.pt are intact
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
        train_loader, val_loader = phase_loaders(run, loaders)
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


def phase_loaders(run: Run, loaders: dict[tuple[bool, bool], tuple]) -> tuple:
    """The (train, val) loaders of the phase in progress, built when the phase starts and kept until it ends: the
    annotations are parsed, and the backbone hashed for the feature cache's key, once per phase, not every epoch."""
    phase = (use_feature_cache(run), in_scst(run))  # what a loader depends on changes only between phases
    if phase not in loaders:
        loaders.clear()  # the last phase's loaders, and their worker processes, go
        loaders[phase] = (make_loader(run, "train", run.config.train_split),
                          make_loader(run, "val", run.config.val_split))
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --out folder that holds another run's checkpoints, replacing them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.add_argument("--captions-only", action="store_true",
                        help="learn from the captions alone, for a set without instance annotations: no pretraining "
                             "of the CNN on the objects (pretrain_epochs 0) and no object_features, which read it")
    args = parser.parse_args(argv)
    if args.captions_only:
        if args.pretrain_epochs or args.object_features:
            parser.error("--captions-only turns off --pretrain-epochs and --object-features: give one or the other")
        args.pretrain_epochs, args.object_features = 0, False
    # SIGTERM (e.g. a job scheduler) is treated like Ctrl-C: save and stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    given = [item.name for item in dataclasses.fields(Config) if getattr(args, item.name, None) is not None]
    try:
        config = config_from_args(args, check=False)  # train() checks it, merged with last.pt when resuming
        with distributed.process_group(resolve_device(config.device).type):  # under torchrun only
            train(config, resume=args.resume, progress=not args.no_progress, given=given, overwrite=args.overwrite)
    except KeyboardInterrupt:
        return 130
    except distributed.PeerFailed:  # rank 0 reports the error
        return 2
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except PretrainedWeightsUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, CheckpointError, pickle.UnpicklingError) as error:  # the last: --vocab-file
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. --out names a file, a full disk, no permission: the environment, not a bug
        print(f"error: {error.strerror or error}: {error.filename or 'file system'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
