"""Self-critical sequence training (Rennie et al. 2017): the reward's tokens and the step that trains for CIDEr."""
from __future__ import annotations

from typing import Iterable

import torch

from captioning import distributed, metrics
from captioning.runtime import autocast
from data_loader import Batch
from vocabulary import is_punctuation
from captioning.training.losses import global_loss, replicated
from captioning.training.run import Run, check_finite, encode


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
