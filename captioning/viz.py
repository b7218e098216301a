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
from typing import TYPE_CHECKING, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from captioning.annotations import annotation_path, image_files, image_path, load_coco
from data_loader import IMAGENET_MEAN, IMAGENET_STD, load_image
from captioning.progress import in_live_jupyter
from vocabulary import Vocabulary, build_vocabulary, is_punctuation, tokenize

if TYPE_CHECKING:  # the model's modules; the notebooks' other pictures do not need them
    from captioning.inference import Captioner
    from captioning.wordmaps import WordMaps

# On a fresh install matplotlib looks for its math fonts once and logs every one it lacks (DejaVu Sans stands in):
# twenty lines of "findfont: ... not found" in the middle of a run that went well.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


# Sizes for a figure read in a notebook. Jupyter and GitHub show a figure at 100 dpi (matplotlib's default) and shrink
# one wider than the page to its width: figures here are at most PAGE_INCHES wide, so that FONT points are about 14
# pixels on screen, the size of the notebook's own text.
PAGE_INCHES = 9.0
FONT = 10.5  # points: every text of a figure, at least
TITLE = 12
LINE_INCHES = FONT * 1.3 / 72  # the height of a line of text
CHAR_INCHES = FONT * 0.6 / 72  # the width of a character, generously (DejaVu Sans)
COLOURS = {"right": "tab:green", "invented": "tab:red", "missed": "tab:orange"}


def _wrap(text: str, inches: float, size: float = FONT) -> list[str]:
    """text wrapped into lines that fit a width in inches at a font size."""
    return textwrap.wrap(text, max(8, int(inches / (CHAR_INCHES * size / FONT)))) or [""]


def _readable(figure: plt.Figure) -> plt.Figure:
    """Tick labels and legends at FONT (titles and labels are given their size where they are made)."""
    for axis in figure.axes:
        axis.tick_params(labelsize=FONT)
        axis.xaxis.label.set_size(max(axis.xaxis.label.get_size(), FONT))
        axis.yaxis.label.set_size(max(axis.yaxis.label.get_size(), FONT))
        axis.title.set_size(max(axis.title.get_size(), FONT))
        legend = axis.get_legend()
        for text in legend.get_texts() if legend else []:
            text.set_size(FONT)
    return figure


Paragraph = tuple[str, dict]  # a text and its matplotlib text properties (colour, weight)


def _lines(paragraphs: Sequence[Paragraph], inches: float) -> list[Paragraph]:
    """Paragraphs wrapped to a width: one (line, properties) each."""
    return [(line, style) for text, style in paragraphs for line in _wrap(text, inches, style.get("size", FONT))]


def _write(axis: plt.Axes, lines: Sequence[Paragraph]) -> None:
    """Lines from the top of an empty axis made tall enough for them (_caption_grid)."""
    axis.axis("off")
    height = axis.get_position().height * axis.figure.get_figheight()  # inches
    for number, (line, style) in enumerate(lines):
        axis.text(0, 1 - (number + 0.15) * LINE_INCHES / height, line, transform=axis.transAxes, va="top",
                  fontsize=FONT, **style)


def _caption_grid(above: Sequence[Sequence[Paragraph]], below: Sequence[Sequence[Paragraph]], columns: int
                  ) -> tuple[plt.Figure, list[plt.Axes]]:
    """A grid of images, each with text above and below in rows tall enough for it: nothing overlaps and nothing
    is cut. Returns the figure and the image axes (to imshow on), in order."""
    count, width = len(above), PAGE_INCHES / columns
    side = width * 0.94
    wrapped = [(_lines(top, width), _lines(bottom, width)) for top, bottom in zip(above, below)]
    heights = []
    for row in range(-(-count // columns)):
        cells = wrapped[row * columns:(row + 1) * columns]
        heights += [max(len(top) for top, _ in cells) * LINE_INCHES + 0.05, side,
                    max(len(bottom) for _, bottom in cells) * LINE_INCHES + 0.25]
    figure = plt.figure(figsize=(PAGE_INCHES, sum(heights)))
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0, wspace=0.06,
                               left=0, right=1, top=1, bottom=0)
    images = []
    for number, (top, bottom) in enumerate(wrapped):
        row, column = divmod(number, columns)
        _write(figure.add_subplot(grid[3 * row, column]), top)
        images.append(figure.add_subplot(grid[3 * row + 1, column]))
        images[-1].axis("off")
        _write(figure.add_subplot(grid[3 * row + 2, column]), bottom)
    return figure, images


def show_samples(data_dir: str | Path, split: str, count: int = 6, columns: int = 3, seed: int = 0) -> plt.Figure:
    """A grid of images of a split with all their human captions underneath."""
    coco = load_coco(annotation_path(data_dir, split))
    image_ids = sorted(coco.imgs)
    image_ids = [image_ids[(seed + index * 7919) % len(image_ids)] for index in range(min(count, len(image_ids)))]
    below = [[("- " + ann["caption"], {}) for ann in coco.imgToAnns[image_id]] for image_id in image_ids]
    figure, axes = _caption_grid([[] for _ in image_ids], below, columns)
    for axis, image_id in zip(axes, image_ids):
        axis.imshow(load_image(image_path(data_dir, split, coco.imgs[image_id]["file_name"])))
    return figure


def caption_statistics(data_dir: str | Path, split: str, top: int = 25) -> plt.Figure:
    """Caption-length histogram and the most frequent words of a split."""
    coco = load_coco(annotation_path(data_dir, split))
    tokens = [tokenize(ann["caption"]) for ann in coco.anns.values()]
    counts = Counter(word for words in tokens for word in words if word.isalnum())
    figure, (left, right) = plt.subplots(1, 2, figsize=(PAGE_INCHES, 4), width_ratios=(1, 2))
    left.hist([len(words) for words in tokens], bins=range(0, max(map(len, tokens)) + 2), color="tab:blue")
    left.set_title(f"caption length\n({split}, {len(tokens)} captions)", fontsize=TITLE)
    left.set(xlabel="tokens", ylabel="captions")
    words, frequencies = zip(*counts.most_common(top))
    right.bar(range(len(words)), frequencies, color="tab:orange")
    right.set_xticks(range(len(words)), words, rotation=70)
    right.set_title(f"{top} most frequent words\n({len(counts)} distinct)", fontsize=TITLE)
    right.set(ylabel="count")
    _readable(figure).tight_layout()
    return figure


def vocabulary_sizes(captions: Sequence[str], thresholds: Sequence[int]) -> plt.Figure:
    """How the vocabulary shrinks as the minimum word count grows."""
    sizes = [len(build_vocabulary(captions, threshold)) for threshold in thresholds]
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.plot(thresholds, sizes, marker="o")
    axis.set(xlabel="vocab_threshold (minimum count)", ylabel="vocabulary size")
    axis.set_title("threshold vs vocabulary", fontsize=TITLE)
    _readable(figure).tight_layout()
    return figure


def unnormalise(images: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) normalised tensors -> (batch, H, W, 3) values in [0, 1] for imshow."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def show_batch(batch, vocab: Vocabulary, count: int = 4) -> plt.Figure:
    """Images of a training batch (as the CNN sees them) with their captions decoded back from ids."""
    count = min(count, len(batch.image_ids))
    below = [[("- " + " ".join(vocab.decode(row)), {}) for row in batch.captions[batch.image_index == position]]
             for position in range(count)]
    figure, axes = _caption_grid([[] for _ in below], below, count)
    pictures = unnormalise(batch.images[:count])
    for position, axis in enumerate(axes):
        axis.imshow(pictures[position])
    return figure


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving mean, its window shrinking at both ends: it starts at the first value and invents no step."""
    half = window // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def _steps(axis: plt.Axes, steps: list[dict], key: str, window: int, colour: str) -> None:
    """One logged value per step: the raw points, faint, and their centred mean."""
    x, values = [entry["step"] for entry in steps], [entry[key] for entry in steps]
    axis.plot(x, values, alpha=0.3, color=colour, label="each logged step")
    if len(values) > 2:
        axis.plot(x, smooth(values, window), color=colour, label=f"centred mean of {window}")
    axis.legend()


def plot_training(log: list[dict], window: int = 9) -> plt.Figure:
    """Four panels: the cross-entropy loss per logged step (perplexity on the right-hand axis), the self-critical
    reward per logged step, and per epoch the validation loss and the scores of the captions the model generates."""
    steps = [entry for entry in log if entry["kind"] == "step" and "loss" in entry]
    rewards = [entry for entry in log if entry["kind"] == "step" and "reward" in entry]
    epochs = [entry for entry in log if entry["kind"] == "epoch"]
    first_scst = next((entry["epoch"] for entry in log if entry["kind"] == "scst"), None)
    figure, ((loss_axis, reward_axis), (val_axis, score_axis)) = plt.subplots(2, 2, figsize=(PAGE_INCHES, 6.6))
    if steps:
        _steps(loss_axis, steps, "loss", window, "tab:blue")
        perplexity = loss_axis.secondary_yaxis("right", functions=(np.exp, lambda x: np.log(np.maximum(x, 1e-9))))
        perplexity.set_ylabel("perplexity", fontsize=FONT)
    loss_axis.set(xlabel="step", ylabel="cross-entropy per word")
    loss_axis.set_title("training loss (cross-entropy epochs)", fontsize=TITLE)
    if rewards:
        _steps(reward_axis, rewards, "reward", window, "tab:purple")
    else:
        reward_axis.text(0.5, 0.5, "no self-critical step logged", ha="center", va="center",
                         transform=reward_axis.transAxes, fontsize=FONT)
    reward_axis.set(xlabel="step", ylabel="mean CIDEr of the samples")
    reward_axis.set_title("self-critical reward", fontsize=TITLE)
    numbers = [entry["epoch"] for entry in epochs]
    if epochs:
        val_axis.plot(numbers, [entry["val_loss"] for entry in epochs], marker="s", color="tab:gray",
                      label="validation loss")
    for key, colour in (("CIDEr", "tab:red"), ("Bleu_4", "tab:green")):
        if epochs and key in epochs[0]:
            score_axis.plot(numbers, [entry[key] for entry in epochs], marker="o", color=colour, label=key)
    for axis in (val_axis, score_axis):
        if first_scst is not None:  # from here the decoder trains for CIDEr, no longer for this loss
            axis.axvline(first_scst - 0.5, color="gray", ls=":", label="self-critical from here")
        axis.set_xlabel("epoch")
        if axis.lines:
            axis.legend()
    val_axis.set_ylabel("cross-entropy per word")
    val_axis.set_title("validation loss (teacher forcing)", fontsize=TITLE)
    score_axis.set_ylabel("score")
    score_axis.set_title("validation captions (generated)", fontsize=TITLE)
    _readable(figure).tight_layout()
    return figure


def _objects_text(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {category}" if count > 1 else category for category, count in sorted(counts.items()))


def show_captions(data_dir: str | Path, split: str, captions: dict[int, str], image_ids: Sequence[int],
                  scores: dict[int, float] | None = None, errors: dict[int, dict] | None = None,
                  columns: int = 4) -> plt.Figure:
    """Images with the generated caption (bold, with its CIDEr) above the human captions. With errors
    (objects.split_errors), the objects the caption got right, invented and missed are listed under it in colour,
    and the image's objects boxed: green where the caption names them, orange where it misses them."""
    coco = load_coco(annotation_path(data_dir, split))
    above, boxes = [], {}
    for image_id in image_ids:
        score = f" (CIDEr {scores[image_id]:.2f})" if scores and image_id in scores else ""
        lines = [(f"model{score}: {captions[image_id]}", {"fontweight": "bold"})]
        for kind, counts in (errors or {}).get(image_id, {}).items():
            if counts:
                lines.append((f"{kind}: {_objects_text(counts)}", {"color": COLOURS[kind]}))
        above.append(lines)
    if errors:
        from captioning.wordmaps import InstanceBoxes

        boxes = InstanceBoxes(data_dir, split).boxes
    below = [[("- " + ann["caption"], {}) for ann in coco.imgToAnns[image_id][:5]] for image_id in image_ids]
    figure, axes = _caption_grid(above, below, columns)
    for axis, image_id in zip(axes, image_ids):
        axis.imshow(load_image(image_path(data_dir, split, coco.imgs[image_id]["file_name"])))
        right = errors[image_id]["right"] if errors and image_id in errors else Counter()
        for category, category_boxes in boxes.get(image_id, {}).items():
            for x, y, width, height in category_boxes:
                axis.add_patch(plt.Rectangle((x, y), width, height, fill=False, lw=2,
                                             color=COLOURS["right" if right[category] else "missed"]))
    return figure


def show_word_maps(word_maps: Sequence[WordMaps], titles: Sequence[str] | None = None,
                   per_row: int = 6) -> plt.Figure:
    """The caption word by word over the image, like "Show, Attend and Tell"'s attention figures: per image its
    title and caption across the top, then the image and one panel per word with the word's map overlaid, per_row
    panels to a row, and one colour bar under them all. Punctuation gets no panel."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    panels = [[position for position, word in enumerate(maps.words) if not is_punctuation(word)]
              for maps in word_maps]
    rows = [max(1, -(-len(positions) // per_row)) for positions in panels]  # rows of panels per image
    cell = PAGE_INCHES / (1 + per_row)
    columns = max(4, 1 + min(per_row, max((len(positions) for positions in panels), default=0)))
    width = cell * columns
    headers = [_lines(([(titles[number], {"fontweight": "bold"})] if titles else []) + [(maps.caption, {})], width)
               for number, maps in enumerate(word_maps)]
    heights = []
    for header, count in zip(headers, rows):
        heights += [len(header) * LINE_INCHES + 0.1] + [cell + 1.5 * LINE_INCHES] * count
    bar_inches = 0.25 + 2.5 * LINE_INCHES  # the colour bar with its numbers and label under it
    height = sum(heights) + bar_inches
    figure = plt.figure(figsize=(width, height))
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0, wspace=0.05, left=0,
                               right=1, top=1, bottom=bar_inches / height)
    top = 0
    for maps, positions, count, header in zip(word_maps, panels, rows, headers):
        _write(figure.add_subplot(grid[top, :]), header)
        picture = unnormalise(maps.image.unsqueeze(0))[0].numpy()
        heat = maps.maps  # (words, H, W)
        shown = [(None, "image")] + [(heat[position].numpy(), maps.words[position]) for position in positions]
        for number, (overlay, word) in enumerate(shown):
            row, column = divmod(number - 1, per_row) if number else (0, -1)
            axis = figure.add_subplot(grid[top + 1 + row, column + 1])
            axis.axis("off")
            axis.set_anchor("S")  # the title above the picture stays in its own row
            axis.imshow(picture)
            if overlay is not None:
                axis.imshow(overlay, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axis.set_title(word, fontsize=FONT, pad=2, fontstyle="normal" if overlay is not None else "italic")
        top += 1 + count
    colour_bar = figure.add_axes([0.1, (0.05 + 2.2 * LINE_INCHES) / height, 0.8, 0.12 / height])
    figure.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), cax=colour_bar, orientation="horizontal")
    colour_bar.set_xlabel("the word's evidence (Grad-CAM, 1 = its strongest cell)", fontsize=FONT)
    colour_bar.tick_params(labelsize=FONT)
    return figure


def plot_pointing_game(result: dict) -> plt.Figure:
    """Pointing-game hit rate of the word maps next to a random point's, over all object words and per
    supercategory (on the synthetic sets, per shape)."""
    groups = {"all": result, **{name: rates for name, rates in result["per_group"].items() if rates["words"]}}
    figure, axis = plt.subplots(figsize=(min(PAGE_INCHES, 1.1 * len(groups) + 2.5), 4))
    positions = range(len(groups))
    axis.bar([p - 0.2 for p in positions], [rates["hit_rate"] for rates in groups.values()], 0.4,
             color="tab:blue", label="word map's maximum in the box")
    axis.bar([p + 0.2 for p in positions], [rates["random_rate"] for rates in groups.values()], 0.4,
             color="tab:gray", label="random point (boxes' share of the image)")
    axis.set_xticks(list(positions), [f"{name}\n({rates['words']} words)" for name, rates in groups.items()],
                    rotation=45 if len(groups) > 5 else 0)
    axis.set(ylabel="hit rate", ylim=(0, 1.3))
    axis.set_title(f"pointing game, {result['split']} split, {result['images']} images, beam {result['beam_size']}",
                   fontsize=TITLE)
    axis.legend(loc="upper right")
    _readable(figure).tight_layout()
    return figure


class TrainingCurves:
    """plot_training drawn once in a cell's output: in a live Jupyter session redrawn in place after every epoch
    (pass it as train.train's on_epoch), in a headless run (papermill) only by show(), at the end."""

    def __init__(self) -> None:
        from IPython.display import display

        self.live = in_live_jupyter()
        self.handle = display({"text/plain": ""}, raw=True, display_id=True)  # where the figure will be

    def __call__(self, log: list[dict]) -> None:
        if self.live:
            self.show(log)

    def show(self, log: list[dict]) -> None:
        """Draw the curves of a log (train.read_log) in the figure's place."""
        figure = plot_training(log)
        self.handle.update(figure)
        plt.close(figure)  # shown through the handle; the inline backend would otherwise show it again


def show_image_files(captioner: Captioner, paths: Iterable[str | Path], beam_size: int = 1,
                     titles: Sequence[str] | None = None) -> plt.Figure | None:
    """show_word_maps for image files (None when none is readable); an unreadable file gets one line, as in
    caption.py."""
    from captioning.wordmaps import word_maps_files

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


def model_diagram(config, images: Sequence[int], features: Sequence[int], scores: Sequence[int]) -> plt.Figure:
    """The model as boxes and arrows, with the shapes a batch takes at each stage: image -> CNN -> grid of cells and
    pooled vector -> attention + LSTM -> words."""
    cells = features[1] - 1 if len(features) == 3 else 0
    side = round(cells ** 0.5)
    grid = f"{side}×{side} = {cells} cells" if side * side == cells else f"{cells} cells"
    boxes = [("image", f"{tuple(images)}\n(batch, colour,\nheight, width)"),
             (f"CNN ({config.backbone})", "layer3's map,\nthen layer4,\npooled"),
             ("image features", (f"{tuple(features)}:\n1 pooled vector\n+ {grid},\neach {features[-1]} wide"
                                 if cells else f"{tuple(features)}:\none pooled vector")),
             ("attention + LSTM" if cells else "LSTM", f"hidden {config.hidden_size};\nper word, looks at\n"
                                                     f"the cells" if cells else f"hidden {config.hidden_size}"),
             ("word scores", f"{tuple(scores)}\n(captions, words,\nvocabulary)")]
    width, gap, height = 1.55, 0.3, 1.9
    figure = plt.figure(figsize=(len(boxes) * width + (len(boxes) - 1) * gap, height))
    axis = figure.add_axes([0, 0, 1, 1])
    axis.set(xlim=(0, figure.get_figwidth()), ylim=(0, height))
    axis.axis("off")
    for number, (name, detail) in enumerate(boxes):
        left = number * (width + gap)
        axis.add_patch(plt.Rectangle((left, 0.05), width, height - 0.1, fill=True, facecolor="#eef3fb",
                                     edgecolor="tab:blue", lw=1.5))
        axis.text(left + width / 2, height - 0.2, name, ha="center", va="top", fontsize=FONT, fontweight="bold")
        axis.text(left + width / 2, height - 0.5, detail, ha="center", va="top", fontsize=FONT)
        if number:
            axis.annotate("", xy=(left, height / 2), xytext=(left - gap, height / 2),
                          arrowprops={"arrowstyle": "->", "lw": 1.5})
    return figure


def example_photo() -> Path:
    """A real photograph that ships with matplotlib: Grace Hopper, an official U.S. Navy portrait (a work of the
    U.S. government, public domain)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
