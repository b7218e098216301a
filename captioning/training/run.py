"""One training run: its models, optimizer and counters (Run), built from a config, checkpointed and restored; its
loaders, the encoding of a batch, and the start of fine-tuning."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO

from captioning import distributed, metrics
from captioning.annotations import annotation_path, image_path, load_coco
from captioning.checkpoint import RUN_COUNTERS, load_weights
from captioning.config import Config
from captioning.files import sha256_file
from captioning.runtime import autocast_dtype, check_precision, resolve_device
from data_loader import Batch, ImageLoadError, Preprocess, get_loader, load_image
from captioning.backbone import object_classes, weights_resize
from model import DecoderRNN, EncoderCNN, build_decoder, build_encoder
from vocabulary import Vocabulary, get_vocabulary
from captioning.training.run_folder import PRETRAINED_NAME
from captioning.training.schedules import CosineSchedule


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
    data_fingerprint: str = ""  # of the training split's annotation file, so that a resumed run reads the same data


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
    encoder = build_encoder(config, pretrained="yes" if config.pretrain_epochs else None, weights=weights,
                            objects=objects)
    decoder = build_decoder(config, vocab)
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
               encoder_pretrained=encoder.pretrained, data_fingerprint=data_fingerprint(config))


def data_fingerprint(config: Config) -> str:
    """The SHA-256 of the training split's annotation file: the same data wherever its folder has moved; "" when the
    file is missing (the loader names it)."""
    path = annotation_path(config.data_dir, config.train_split)
    return sha256_file(path) if path.is_file() else ""


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
            "metrics": run.history[-1] if run.history else {}, "world_size": distributed.world_size(),
            "data_fingerprint": run.data_fingerprint}


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


def make_loader(run: Run, mode: str, split: str, progress: bool = True):
    """A loader over images for one split (training transform in train mode); progress: a bar while caching."""
    config = run.config
    transform = Preprocess.of(config, train=mode == "train")
    features = None
    if use_feature_cache(run):
        from captioning.features import feature_store  # only needed with a frozen backbone
        # A backbone this run trained has features of its own, which belong with the run, not with the data.
        cache_dir = run.out / "cache" if in_scst(run) and backbone_trained_here(run) else None
        features = feature_store(run.encoder, config, split, run.device, cache_dir=cache_dir, progress=progress)
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


def in_scst(run: Run) -> bool:
    """Whether the epoch in progress is one of the config.scst_epochs after the cross-entropy ones."""
    return run.epoch >= run.config.epochs


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
