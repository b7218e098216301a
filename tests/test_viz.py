"""The notebooks' figures are readable at the page's width: no text smaller than the notebook's own, none outside
the figure, none over an image (a caption hidden under the next row of images)."""
from __future__ import annotations

import json
from collections import Counter

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from captioning import objects  # noqa: E402
from captioning import tables, viz  # noqa: E402
from captioning.annotations import annotation_path, load_coco  # noqa: E402
from captioning.wordmaps import WordMaps  # noqa: E402

PAGE_PX = 900  # the width Jupyter and GitHub give a figure; a wider one is shrunk to it
MIN_TEXT_PX = 12.5  # about the notebook's own font size


def text_problems(figure: plt.Figure) -> list[str]:
    """Each visible text that is too small on screen, sticks out of the figure or lies over an image."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    area = figure.bbox  # what savefig writes (Jupyter's bbox_inches="tight" only trims it)
    shrink = min(1.0, PAGE_PX / area.width)
    images = [(axis, axis.get_window_extent(renderer)) for axis in figure.axes if axis.images]
    every_axis = [each for axis in figure.axes for each in (axis, *axis.child_axes)]  # secondary axes too
    undrawn = {id(label) for axis in every_axis for ruler in (axis.xaxis, axis.yaxis)
               for tick in ruler.get_major_ticks() + ruler.get_minor_ticks()
               if not axis.axison or not min(ruler.get_view_interval()) <= tick.get_loc()
               <= max(ruler.get_view_interval())
               for label in (tick.label1, tick.label2)}  # ticks beyond the axis' limits are not drawn
    problems = []
    for text in figure.findobj(matplotlib.text.Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        box = text.get_window_extent(renderer)
        if box.width == 0:
            continue
        pixels = text.get_fontsize() * figure.dpi / 72 * shrink
        name = repr(text.get_text()[:40])
        if pixels < MIN_TEXT_PX:
            problems.append(f"{name} is {pixels:.1f} px on the page")
        if box.x0 < area.x0 - 1 or box.x1 > area.x1 + 1 or box.y0 < area.y0 - 1 or box.y1 > area.y1 + 1:
            problems.append(f"{name} sticks out of the figure")
        if any(box.overlaps(image) for axis, image in images if axis is not text.axes):
            problems.append(f"{name} lies over an image")  # e.g. a caption hidden under the next row
    return problems


@pytest.fixture(scope="module")
def test_split(synthetic_dir):
    coco = load_coco(annotation_path(synthetic_dir, "test"))
    return sorted(coco.imgs), {image_id: anns[0]["caption"] for image_id, anns in coco.imgToAnns.items()}


def fake_log(epochs: int = 4, scst_from: int = 3, steps: int = 30) -> list[dict]:
    log = [{"kind": "start"}]
    for epoch in range(1, epochs + 1):
        scst = epoch >= scst_from
        if epoch == scst_from:
            log.append({"kind": "scst", "epoch": epoch})
        for step in range(steps):
            value = {"reward": 3 + step / steps} if scst else {"loss": 2 / (1 + step + epoch * steps) + 0.5,
                                                                "perplexity": 2.0}
            log.append({"kind": "step", "epoch": epoch, "step": epoch * steps + step, **value})
        log.append({"kind": "epoch", "epoch": epoch, "val_loss": 0.7 + scst, "CIDEr": 3 + epoch / 10,
                    "Bleu_4": 0.7, "train_reward" if scst else "train_loss": 1.0, "seconds": 50})
    return log


def test_every_figure_is_readable(synthetic_dir, test_split):
    image_ids, captions = test_split
    errors = objects.split_errors(synthetic_dir, "test", captions)
    wrong = {**captions, image_ids[0]: "two teal stars and a purple circle on a light blue background"}
    image = torch.zeros(3, 32, 32)
    maps = WordMaps(image, ["a", "big", "red", "circle", "on", "a", "white", "background", "."],
                    torch.rand(9, 2, 2), "a big red circle on a white background")
    pointing = {"split": "test", "images": 6, "beam_size": 3, "hit_rate": 0.6, "random_rate": 0.1, "words": 9,
                "per_group": {name: {"hit_rate": 0.5, "random_rate": 0.1, "words": 3}
                              for name in ("circle", "square", "star", "cross", "triangle", "diamond", "disk")}}
    config = type("Config", (), {"backbone": "resnet18", "hidden_size": 512})
    figures = {
        "samples": viz.show_samples(synthetic_dir, "train", count=6),
        "statistics": viz.caption_statistics(synthetic_dir, "train"),
        "vocabulary": viz.vocabulary_sizes(list(captions.values()) * 5, [1, 2, 3]),
        "training": viz.plot_training(fake_log()),
        "training without scst": viz.plot_training(fake_log(scst_from=9)),
        "captions": viz.show_captions(synthetic_dir, "test", wrong, image_ids,
                                      dict.fromkeys(image_ids, 1.234), objects.split_errors(
                                          synthetic_dir, "test", wrong)),
        "captions without objects": viz.show_captions(synthetic_dir, "test", captions, image_ids[:3]),
        "word maps": viz.show_word_maps([maps, maps], ["CIDEr 0.12", "a file name.jpg"]),
        "pointing game": viz.plot_pointing_game(pointing),
        "model": viz.model_diagram(config, (4, 3, 96, 96), (4, 37, 256), (20, 14, 95)),
    }
    assert errors is not None
    problems = {name: text_problems(figure) for name, figure in figures.items()}
    plt.close("all")
    assert not {name: found for name, found in problems.items() if found}


def test_the_check_finds_small_clipped_and_hidden_text():
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4))
    top.imshow([[0, 1], [1, 0]])
    top.text(0, -0.1, "five\ncaptions\nunder\nthe\nimage", transform=top.transAxes, va="top", fontsize=12)
    bottom.imshow([[0, 1], [1, 0]])
    figure.text(0.99, 0.5, "a label cut off at the edge", fontsize=12)
    figure.text(0.01, 0.01, "tiny", fontsize=7)
    found = " ".join(text_problems(figure))
    plt.close(figure)
    assert "lies over an image" in found and "sticks out" in found and "'tiny' is" in found


def test_the_best_captions_picture_is_saved_sharp(synthetic_dir, test_split, tmp_path):
    image_ids, captions = test_split
    viz.show_captions(synthetic_dir, "test", captions, image_ids).savefig(tmp_path / "c.png", dpi=150,
                                                                          bbox_inches="tight")
    from PIL import Image

    assert Image.open(tmp_path / "c.png").width >= 1200  # GitHub shows it at about 900 px: text stays crisp
    plt.close("all")


def test_smoothing_starts_at_the_first_point_and_invents_no_step():
    values = [4.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.0, 1.0]
    smoothed = viz.smooth(values, 5)
    assert len(smoothed) == len(values) and smoothed[0] <= values[0]
    assert max(smoothed) <= max(values) and smoothed == sorted(smoothed, reverse=True)


def test_caption_errors_name_right_invented_and_missed_objects():
    image = objects.ImageObjects(Counter({"orange circle": 1, "teal cross": 1, "red square": 1}))
    named = Counter({"teal circle": 1, "red square": 2})  # an orange circle called teal, a square counted twice
    errors = objects.caption_errors(named, image)
    assert errors == {"right": Counter({"red square": 1}),
                      "invented": Counter({"teal circle": 1, "red square": 1}),
                      "missed": Counter({"orange circle": 1, "teal cross": 1})}
    assert objects.error_count(errors) == 4


def test_tables_show_every_setting_with_its_source_and_scores_to_three_digits(tmp_path):
    from captioning.config import make_config

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"epochs": 4, "hidden_size": 512}))
    config = make_config(recipe, epochs=2, hidden_size=512)
    table = tables.config_markdown(config, recipe, {"epochs": 2, "hidden_size": 512, "lr": None})
    assert "| `epochs` | `2` | cell |" in table and "| `hidden_size` | `512` | recipe |" in table
    assert "| `lr` |" in table and "| default |" in table
    history = [{"epoch": 1, "train_loss": 1.23456, "val_loss": 0.8, "CIDEr": 2.91234},
               {"epoch": 2, "train_reward": 3.4, "val_loss": 1.3, "CIDEr": 3.61789}]
    epochs = tables.epochs_markdown(history)
    assert "**3.618**" in epochs and "(best.pt)" in epochs and "2.912" in epochs and "2.91234" not in epochs
    assert "self-critical" in epochs


def test_generated_ids_stop_at_end(trained_checkpoint):
    from captioning.checkpoint import load_checkpoint

    from vocabulary import Vocabulary

    vocab = Vocabulary.from_dict(load_checkpoint(trained_checkpoint)["vocab"])
    text = tables.generated_ids(vocab, [4, 5, vocab.end_index, vocab.pad_index, vocab.pad_index])
    assert "<end>" in text and "<pad>" not in text
