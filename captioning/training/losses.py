"""The cross-entropy step: caption and bag-of-words losses, scheduled sampling, and the loss of a global batch under
torchrun."""
from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

from captioning import distributed
from captioning.runtime import autocast
from data_loader import Batch
from captioning.training.run import Run, check_finite, encode, in_scst



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
