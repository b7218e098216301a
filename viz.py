"""Pictures for the notebooks: sample grids, caption statistics, training curves, captions next to human ones,
word maps, and the pointing game."""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import re
import tempfile
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import torch

from annotations import annotation_path, image_files, image_path, load_coco
from data_loader import IMAGENET_MEAN, IMAGENET_STD, load_image
from progress import in_live_jupyter
from vocabulary import Vocabulary, build_vocabulary, is_punctuation, tokenize

if TYPE_CHECKING:  # the model's modules; the notebooks' other pictures do not need them
    from inference import Captioner
    from wordmaps import WordMaps

# On a fresh install matplotlib looks for its math fonts once and logs every one it lacks (DejaVu Sans stands in):
# twenty lines of "findfont: ... not found" in the middle of a run that went well.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


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
    if "bad_endings" in report:
        lines[-1] += (f" Captions cut off (ending on 'a', 'on', 'and'...): {report['bad_endings']['model']:.1%} "
                      f"(first references: {report['bad_endings']['human']:.1%}).")
    return "\n".join(lines)


def show_word_maps(word_maps: Sequence[WordMaps], titles: Sequence[str] | None = None,
                   per_row: int = 8) -> plt.Figure:
    """The caption word by word over the image, like "Show, Attend and Tell"'s attention figures: per image the
    image (with its caption), then one panel per word with the word's map overlaid, per_row panels to a row.
    Punctuation gets no panel."""
    panels = [[position for position, word in enumerate(maps.words) if not is_punctuation(word)]
              for maps in word_maps]
    heights = [max(1, -(-len(positions) // per_row)) for positions in panels]  # rows of panels per image
    columns = 1 + min(per_row, max((len(positions) for positions in panels), default=0))
    figure, axes = plt.subplots(sum(heights), columns, figsize=(1.6 * columns, 1.75 * sum(heights)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    top = 0
    for number, (maps, positions, height) in enumerate(zip(word_maps, panels, heights)):
        picture = unnormalise(maps.image.unsqueeze(0))[0].numpy()
        axes[top, 0].imshow(picture)
        title = f"{titles[number]}\n{maps.caption}" if titles else maps.caption
        axes[top, 0].set_title(_wrap(title, 26), fontsize=6.5, loc="left")
        heat = maps.maps  # (words, H, W)
        for count, position in enumerate(positions):
            axis = axes[top + count // per_row, 1 + count % per_row]
            axis.imshow(picture)
            axis.imshow(heat[position].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axis.set_title(maps.words[position], fontsize=9)
        top += height
    figure.tight_layout(pad=0.3)
    return figure


def plot_pointing_game(result: dict) -> plt.Figure:
    """Pointing-game hit rate of the word maps next to a random point's, over all object words and per
    supercategory (on the synthetic sets, per shape)."""
    groups = {"all": result, **{name: rates for name, rates in result["per_group"].items() if rates["words"]}}
    figure, axis = plt.subplots(figsize=(1.1 * len(groups) + 2, 3.4))
    positions = range(len(groups))
    axis.bar([p - 0.2 for p in positions], [rates["hit_rate"] for rates in groups.values()], 0.4,
             color="tab:blue", label="word map's maximum in the box")
    axis.bar([p + 0.2 for p in positions], [rates["random_rate"] for rates in groups.values()], 0.4,
             color="tab:gray", label="random point (boxes' share of the image)")
    axis.set_xticks(list(positions), [f"{name}\n({rates['words']} words)" for name, rates in groups.items()],
                    fontsize=8)
    axis.set(ylabel="hit rate", ylim=(0, 1),
             title=f"pointing game, {result['split']} split, {result['images']} images, beam {result['beam_size']}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def live_training_curves() -> Callable[[list[dict]], None]:
    """A train.train on_epoch callback that redraws plot_training in one notebook output after every epoch."""
    from IPython.display import display

    handle = None

    def redraw(log: list[dict]) -> None:
        nonlocal handle
        figure = plot_training(log)
        if handle is None:
            handle = display(figure, display_id=True)
        else:
            handle.update(figure)
        plt.close(figure)  # shown through the handle; the inline backend would otherwise show it again
    return redraw


def show_image_files(captioner: Captioner, paths: Iterable[str | Path], beam_size: int = 1,
                     titles: Sequence[str] | None = None) -> plt.Figure | None:
    """show_word_maps for image files (None when none is readable); an unreadable file gets one line, as in
    caption.py."""
    from wordmaps import word_maps_files

    shown, names = [], []
    for number, (path, maps, error) in enumerate(word_maps_files(captioner, paths, beam_size)):
        if error:
            print(f"error: {error}")
        else:
            shown.append(maps)
            names.append(titles[number] if titles else Path(path).name)
    return show_word_maps(shown, names) if shown else None


def show_split_word_maps(captioner: Captioner, data_dir: str | Path, split: str, image_ids: Sequence[int],
                          beam_size: int = 1, scores: dict[int, float] | None = None) -> plt.Figure | None:
    """show_word_maps for images of a split, titled with their CIDEr when scores are given."""
    split_files = image_files(data_dir, split)
    files = [split_files[image_id] for image_id in image_ids]
    titles = [f"CIDEr {scores[image_id]:.2f}" if scores else Path(file).name
              for image_id, file in zip(image_ids, files)]
    return show_image_files(captioner, files, beam_size, titles)


def show_image_glob(captioner: Captioner, pattern: str, beam_size: int = 1) -> plt.Figure | None:
    """show_image_files for the files a glob matches (** included); says so when it matches none."""
    paths = sorted(path for path in glob.glob(os.path.expanduser(pattern), recursive=True) if not os.path.isdir(path))
    if not paths:
        print(f"error: no file matches {pattern!r}: give a glob of image files, e.g. 'photos/*.jpg'")
        return None
    return show_image_files(captioner, paths, beam_size)


def show_uploaded(captioner: Captioner, files: Sequence[dict], beam_size: int = 1) -> plt.Figure | None:
    """show_image_files for files dropped on an ipywidgets FileUpload (dicts with "name" and "content")."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for number, file in enumerate(files):
            paths.append(Path(folder) / str(number) / Path(file["name"]).name)  # the user's name, in messages too
            paths[-1].parent.mkdir()
            paths[-1].write_bytes(bytes(file["content"]))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            figure = show_image_files(captioner, paths, beam_size)
        print(re.sub(re.escape(folder + os.sep) + r"\d+" + re.escape(os.sep), "", printed.getvalue()), end="")
        return figure


def upload_widget(captioner: Captioner, beam_size: int = 1):
    """Show an upload button that captions each dropped image with its word maps; only in a live Jupyter session
    (returns None, showing nothing, in papermill, nbconvert and the tests)."""
    if not in_live_jupyter():
        return None
    import ipywidgets
    from IPython.display import display

    upload = ipywidgets.FileUpload(accept="image/*", multiple=True, description="Caption images")
    output = ipywidgets.Output()

    def on_upload(change: dict) -> None:
        with output:
            output.clear_output()
            figure = show_uploaded(captioner, change["new"], beam_size)
            if figure is not None:
                display(figure)
                plt.close(figure)
    upload.observe(on_upload, names="value")
    display(ipywidgets.VBox([upload, output]))
    return upload
