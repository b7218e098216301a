"""The notebooks' tables and text, as Markdown or plain lines: split sizes, a run's settings and where each comes
from, its epochs, the scores beside the image-blind baseline, and a generated caption's ids."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from captioning.annotations import annotation_path, load_coco
from captioning.config import load_recipe
from vocabulary import Vocabulary


def split_sizes(data_dir: str | Path, splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images and captions per split (splits whose annotation file is missing are left out)."""
    sizes = {}
    for split in splits:
        if annotation_path(data_dir, split).exists():
            coco = load_coco(annotation_path(data_dir, split))
            sizes[split] = {"images": len(coco.imgs), "captions": len(coco.anns)}
    return sizes


def sizes_markdown(data_dir: str | Path, splits: Sequence[str]) -> str:
    """split_sizes as a Markdown table."""
    rows = [f"| `{split}` | {size['images']} | {size['captions']} |"
            for split, size in split_sizes(data_dir, splits).items()]
    return "\n".join(["| split | images | captions |", "|---|---:|---:|", *rows])


def metrics_markdown(report: dict) -> str:
    """The model's scores next to the constant-caption baseline, as a Markdown table."""
    keys = [key for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
            if key in report["model"]]
    lines = ["| metric | model | image-blind baseline |", "|---|---:|---:|"]
    lines += [f"| {key} | {report['model'][key]:.3f} | {report['baseline'][key]:.3f} |" for key in keys]
    lines.append(f"\n{report['images']} images of split `{report['split']}`, beam size {report['beam_size']}; "
                 f"baseline caption for every image: *{report['baseline']['caption']}*.")
    if "METEOR" not in report["model"]:
        lines[-1] += f" METEOR {report['meteor']}."
    if report.get("bad_endings", {}).get("model"):  # worth a word only when the model cuts captions off
        lines[-1] += (f" Captions cut off (ending on 'a', 'on', 'and'...): {report['bad_endings']['model']:.1%} "
                      f"(first references: {report['bad_endings']['human']:.1%}).")
    return "\n".join(lines)


def generated_ids(vocab: Vocabulary, ids: Sequence[int]) -> str:
    """A generated caption's ids up to <end>, their words, and the clean sentence, one a line."""
    ids = list(ids)
    ids = ids[:ids.index(vocab.end_index) + 1] if vocab.end_index in ids else ids
    return (f"ids:   {ids}\nwords: {[vocab.idx2word[index] for index in ids]}\n"
            f"clean: {vocab.clean_sentence(ids)}")


def config_markdown(config, recipe: str | Path | None = None, cell: dict | None = None) -> str:
    """Every setting of a Config as a Markdown table, each with where its value comes from: the notebook's cell
    (a value that differs from the recipe's), the recipe file, or the Config's default."""
    in_recipe = load_recipe(recipe) if recipe else {}
    rows = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        given = (cell or {}).get(item.name)
        if given is not None and given != in_recipe.get(item.name, item.default):
            source = "cell"
        else:
            source = "recipe" if item.name in in_recipe else "default"
        rows.append(f"`{item.name}` | {'`' + repr(value) + '`' if value != '' else ''} | {source}")
    half = -(-len(rows) // 2)  # two tables side by side: half as tall
    left, right = rows[:half], rows[half:] + [" | | "] * (2 * half - len(rows))
    header = "| setting | value | from | setting | value | from |\n|---|---|---|---|---|---|\n"
    return header + "\n".join(f"| {a} | {b} |" for a, b in zip(left, right))


def epochs_markdown(history: list[dict], metric: str = "CIDEr") -> str:
    """The epochs of a training run as a Markdown table to 3 digits, the best by metric (best.pt) in bold."""
    if not history:
        return "(no epoch was trained in this run)"
    keys = [key for key in ("val_loss", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if key in history[0]]
    best = max(history, key=lambda entry: entry.get(metric, float("-inf")))["epoch"]
    lines = ["| epoch | training | train loss or reward | " + " | ".join(keys) + " | seconds |",
             "|---:|---|---:|" + "---:|" * len(keys) + "---:|"]
    for entry in history:
        kind, value = ("self-critical", entry["train_reward"]) if "train_reward" in entry else \
            ("cross-entropy", entry.get("train_loss", float("nan")))
        cells = [f"{entry['epoch']}", kind, f"{value:.3f}", *(f"{entry[key]:.3f}" for key in keys),
                 f"{entry.get('seconds', 0):.0f}"]
        if entry["epoch"] == best:
            cells = [f"**{cell}**" for cell in cells]
            cells[0] += " (best.pt)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
