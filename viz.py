"""Pictures for the notebooks: sample grids, caption statistics, training curves, captions next to human ones."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch

from annotations import annotation_path, image_path, load_coco
from data_loader import IMAGENET_MEAN, IMAGENET_STD, load_image
from vocabulary import Vocabulary, build_vocabulary, tokenize


def _wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _grid(count: int, columns: int, cell: tuple[float, float]) -> tuple[plt.Figure, list[plt.Axes]]:
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(cell[0] * columns, cell[1] * rows), squeeze=False)
    axes = list(axes.flat)
    for axis in axes:
        axis.axis("off")
    return figure, axes


def show_samples(data_dir: str | Path, split: str, count: int = 6, columns: int = 3, seed: int = 0) -> plt.Figure:
    """A grid of images of a split with their human captions underneath."""
    coco = load_coco(annotation_path(data_dir, split))
    image_ids = sorted(coco.imgs)
    image_ids = [image_ids[(seed + index * 7919) % len(image_ids)] for index in range(min(count, len(image_ids)))]
    figure, axes = _grid(len(image_ids), columns, (4.2, 5.2))
    for axis, image_id in zip(axes, image_ids):
        axis.imshow(load_image(image_path(data_dir, split, coco.imgs[image_id]["file_name"])))
        captions = [_wrap(ann["caption"]) for ann in coco.imgToAnns[image_id]]
        axis.set_title("\n".join(captions), fontsize=7, loc="left", y=-0.02, va="top")
    figure.tight_layout()
    return figure


def caption_statistics(data_dir: str | Path, split: str, top: int = 25) -> plt.Figure:
    """Caption-length histogram and the most frequent words of a split."""
    coco = load_coco(annotation_path(data_dir, split))
    tokens = [tokenize(ann["caption"]) for ann in coco.anns.values()]
    counts = Counter(word for words in tokens for word in words if word.isalnum())
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    left.hist([len(words) for words in tokens], bins=range(0, max(map(len, tokens)) + 2), color="tab:blue")
    left.set(title=f"caption length ({split}, {len(tokens)} captions)", xlabel="tokens", ylabel="captions")
    words, frequencies = zip(*counts.most_common(top))
    right.bar(range(len(words)), frequencies, color="tab:orange")
    right.set_xticks(range(len(words)), words, rotation=70, fontsize=8)
    right.set(title=f"{top} most frequent words ({len(counts)} distinct)", ylabel="count")
    figure.tight_layout()
    return figure


def split_sizes(data_dir: str | Path, splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images and captions per split (splits whose annotation file is missing are left out)."""
    sizes = {}
    for split in splits:
        if annotation_path(data_dir, split).exists():
            coco = load_coco(annotation_path(data_dir, split))
            sizes[split] = {"images": len(coco.imgs), "captions": len(coco.anns)}
    return sizes


def vocabulary_sizes(captions: Sequence[str], thresholds: Sequence[int]) -> plt.Figure:
    """How the vocabulary shrinks as the minimum word count grows."""
    sizes = [len(build_vocabulary(captions, threshold)) for threshold in thresholds]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(thresholds, sizes, marker="o")
    axis.set(xlabel="vocab_threshold (minimum count)", ylabel="vocabulary size", title="threshold vs vocabulary")
    figure.tight_layout()
    return figure


def unnormalise(images: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) normalised tensors -> (batch, H, W, 3) values in [0, 1] for imshow."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def show_batch(batch, vocab: Vocabulary, count: int = 4) -> plt.Figure:
    """Images of a training batch (as the CNN sees them) with their captions decoded back from ids."""
    count = min(count, len(batch.image_ids))
    figure, axes = _grid(count, count, (3.6, 4.4))
    pictures = unnormalise(batch.images[:count])
    for position, axis in enumerate(axes[:count]):
        axis.imshow(pictures[position])
        rows = batch.captions[batch.image_index == position]
        axis.set_title("\n".join(_wrap(" ".join(vocab.decode(row)), 34) for row in rows), fontsize=7,
                       loc="left", y=-0.02, va="top")
    figure.tight_layout()
    return figure


def plot_training(log: list[dict], smooth: int = 10) -> plt.Figure:
    """Training loss and perplexity per step, and the per-epoch validation loss and caption scores."""
    steps = [entry for entry in log if entry["kind"] == "step" and "loss" in entry]  # not the SCST steps
    epochs = [entry for entry in log if entry["kind"] == "epoch"]
    figure, (loss_axis, perplexity_axis, score_axis) = plt.subplots(1, 3, figsize=(15, 3.8))
    x = [entry["step"] for entry in steps]
    for axis, key in ((loss_axis, "loss"), (perplexity_axis, "perplexity")):
        values = [entry[key] for entry in steps]
        axis.plot(x, values, alpha=0.3, color="tab:blue")
        if len(values) > smooth:
            running = [sum(values[i - smooth:i]) / smooth for i in range(smooth, len(values) + 1)]
            axis.plot(x[smooth - 1:], running, color="tab:blue", label=f"mean of {smooth} log points")
            axis.legend()
        axis.set(xlabel="step", title=f"training {key}")
    perplexity_axis.set_yscale("log")
    numbers = [entry["epoch"] for entry in epochs]
    for key in ("CIDEr", "Bleu_4"):
        if epochs and key in epochs[0]:
            score_axis.plot(numbers, [entry[key] for entry in epochs], marker="o", label=f"val {key}")
    if epochs:
        score_axis.plot(numbers, [entry["val_loss"] for entry in epochs], marker="s", ls="--", label="val loss")
    first_scst = next((entry["epoch"] for entry in log if entry["kind"] == "scst"), None)
    if first_scst is not None:  # from here the decoder trains for CIDEr, and its cross-entropy loss may rise
        score_axis.axvline(first_scst - 0.5, color="gray", ls=":", label="self-critical from here")
    score_axis.set(xlabel="epoch", title="validation (generated captions)")
    score_axis.legend()
    figure.tight_layout()
    return figure


def show_captions(data_dir: str | Path, split: str, captions: dict[int, str], image_ids: Sequence[int],
                  scores: dict[int, float] | None = None, columns: int = 4) -> plt.Figure:
    """Images with the generated caption (bold, with its CIDEr) above the human captions."""
    coco = load_coco(annotation_path(data_dir, split))
    figure, axes = _grid(len(image_ids), columns, (4.0, 6.2))  # room for five human captions under each image
    for axis, image_id in zip(axes, image_ids):
        axis.imshow(load_image(image_path(data_dir, split, coco.imgs[image_id]["file_name"])))
        score = f"  (CIDEr {scores[image_id]:.2f})" if scores and image_id in scores else ""
        axis.set_title(_wrap(f"model: {captions[image_id]}{score}", 36), fontsize=8, fontweight="bold")
        human = "\n".join(_wrap("- " + ann["caption"], 40) for ann in coco.imgToAnns[image_id][:5])
        axis.text(0, -0.03, human, transform=axis.transAxes, fontsize=6.5, va="top")
    figure.tight_layout()
    return figure


def metrics_markdown(report: dict) -> str:
    """The model's scores next to the constant-caption baseline, as a Markdown table."""
    keys = [key for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
            if key in report["model"]]
    lines = ["| metric | model | image-blind baseline |", "|---|---:|---:|"]
    lines += [f"| {key} | {report['model'][key]:.3f} | {report['baseline'][key]:.3f} |" for key in keys]
    lines.append(f"\n{report['images']} images of split `{report['split']}`, beam size {report['beam_size']}; "
                 f"baseline caption for every image: *{report['baseline']['caption']}*; METEOR {report['meteor']}.")
    return "\n".join(lines)
