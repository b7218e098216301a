"""Evaluate a checkpoint on a split: caption every image, write the COCO results file, print the COCO metrics.

    python evaluate.py --checkpoint models/best.pt --data-dir data/synthetic --split val --out results.json

Prints one JSON line with BLEU-1..4, METEOR (when Java is present), ROUGE_L and CIDEr from pycocoevalcap, for the
model and for an image-blind baseline: the single caption, chosen on the training split, that scores best when
given to every image. A model that does not beat it is not using the image.

On a split with COCO instance annotations (annotations/instances_<split>.json: the built-in synthetic sets write
them, `prepare_data.py coco` keeps COCO's) it also prints the object scores of objects.py for the model and for one
human reference per image, the ceiling: object precision and recall (whether the captions name the objects that are
really there, counts included, which CIDEr alone does not tell) and CHAIRi / CHAIRs (how often they name one that
is not). The words naming each category come from --synonyms, the set's annotations/synonyms.txt, COCO's list or
the category names (objects.py).
"""
from __future__ import annotations

from captioning.interrupts import quiet_interrupts

if __name__ == "__main__":  # before torch loads, which takes seconds: a Ctrl-C then ends the command quietly
    quiet_interrupts()

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from captioning import metrics
from captioning import objects
from captioning.annotations import annotation_path, load_coco
from captioning.checkpoint import CheckpointError
from captioning.config import read_at_least
from captioning.files import check_file, write_json_atomic
from captioning.inference import Captioner


def references(data_dir: str | Path, split: str, coco: COCO | None = None) -> dict[int, list[str]]:
    """Human captions of a split by image id (from coco when given, else read from the split's file)."""
    coco = coco or load_coco(annotation_path(data_dir, split))
    return {image_id: [ann["caption"] for ann in anns] for image_id, anns in coco.imgToAnns.items() if anns}


def evaluate(checkpoint: str | Path, data_dir: str | Path | None = None, split: str = "val", beam_size: int = 1,
             out: str | Path | None = None, batch_size: int = 64, max_images: int = 0, device: str = "auto",
             num_workers: int = 0, progress: bool = True, captioner: Captioner | None = None,
             baseline: dict[str, Any] | None = None, synonyms: str | Path | None = None) -> dict[str, Any]:
    """Caption a split with the checkpoint and score it next to the best constant caption; returns the report.

    baseline: the "baseline" of an earlier report on the same images, reused instead of chosen again.
    synonyms: a synonym list for the object scores (objects.py), instead of the one the set has.
    """
    # A notebook's parameters (notebook 3) arrive unchecked: beam 0 would decode greedily and be reported as "Beam 0".
    beam_size, batch_size = read_at_least("beam_size", beam_size, 1), read_at_least("batch_size", batch_size, 1)
    max_images, num_workers = read_at_least("max_images", max_images, 0), read_at_least("num_workers", num_workers, 0)
    if out:  # found before captioning the split, not after
        check_results_path(Path(out))
    if synonyms is not None:
        objects.read_synonyms(synonyms)  # a wrong list is refused before the split is captioned
    captioner = captioner or Captioner(checkpoint, device)
    data_dir = Path(data_dir or captioner.config.data_dir)
    coco = load_coco(annotation_path(data_dir, split))  # a missing or broken split is found before captioning it
    train_file = annotation_path(data_dir, captioner.config.train_split)
    if baseline is None and not train_file.is_file():  # so is a missing training split, which the baseline needs
        raise FileNotFoundError(f"the image-blind baseline is chosen on the training captions, {train_file}, which "
                                f"is missing: give the --data-dir the checkpoint trained on, or add that file")
    captions, skipped = captioner.caption_split(data_dir, split, beam_size, batch_size, num_workers, max_images,
                                                progress)
    if out:
        write_json_atomic(Path(out), [{"image_id": image_id, "caption": caption}
                                      for image_id, caption in sorted(captions.items())])
    split_references = references(data_dir, split, coco)
    captions = {image_id: caption for image_id, caption in captions.items() if image_id in split_references}
    if not captions:
        why = f"all {len(skipped)} images were unreadable, the first: {skipped[0]}" if skipped else \
            "no captioned image has a reference caption"
        raise ValueError(f"nothing to score in the split {split!r} of {data_dir}: {why}")
    scored = {image_id: split_references[image_id] for image_id in captions}
    model_scores = metrics.score_captions(scored, captions)
    if baseline is None:
        constant = metrics.best_constant_caption(references(data_dir, captioner.config.train_split))
        baseline = {"caption": constant, **metrics.constant_caption_scores(constant, scored)}
    return {"split": split, "images": len(captions), "skipped_images": len(skipped), "beam_size": beam_size,
            "skipped": skipped, "model": model_scores, "baseline": baseline,
            "cider_vs_baseline": model_scores["CIDEr"] / max(baseline["CIDEr"], 1e-9),
            "bad_endings": {"model": metrics.bad_endings(captions.values()),
                            "human": metrics.bad_endings(split_references[image_id][0] for image_id in captions)},
            "objects": objects.split_report(data_dir, split, split_references, captions, synonyms),
            "meteor": "computed" if "METEOR" in model_scores else "skipped: Java not found",
            "results_file": str(out) if out else None, "captions": captions}


def check_results_path(out: Path) -> None:
    """Refuse a results path that is a folder, that names a file which is not a results file of ours (a checkpoint,
    an annotation file: they are never replaced), or whose folder cannot be written."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the results file's path, e.g. {out / 'results.json'}")
    check_file(out, "--out")
    if out.exists() and not is_results_file(out):
        raise ValueError(f"--out {out} exists and is not a results file (a JSON list of image_id and caption), so it "
                         f"is not replaced: choose another path")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: the folder {folder} cannot be written")


def is_results_file(path: Path) -> bool:
    """Whether path holds a COCO results file as evaluate writes it: a JSON list of {"image_id", "caption"}."""
    try:
        with path.open("rb") as file:
            if file.read(1) != b"[":  # a checkpoint, an annotation file (an object), ...: not worth parsing
                return False
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return isinstance(entries, list) and all(isinstance(entry, dict) and set(entry) == {"image_id", "caption"}
                                             for entry in entries)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prints a readable table on stderr and one JSON line on stdout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--data-dir", help="dataset folder (default: the one the checkpoint was trained on)")
    parser.add_argument("--split", default="val", help="split to caption and score (default val)")
    parser.add_argument("--out", help="write the COCO results file here, e.g. results.json")
    parser.add_argument("--beam-size", type=int, default=1, help="1 = greedy decoding (default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-images", type=int, default=0, help="score only the first N images (0 = all)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--synonyms", help="words naming each object category, in the format of coco_synonyms.txt "
                        "(default: the set's annotations/synonyms.txt, COCO's list, or the category names)")
    args = parser.parse_args(argv)
    for flag, value, lowest in (("--beam-size", args.beam_size, 1), ("--batch-size", args.batch_size, 1),
                                ("--max-images", args.max_images, 0), ("--num-workers", args.num_workers, 0)):
        if value < lowest:
            parser.error(f"{flag} must be at least {lowest}, got {value}")
    written_before = _modified(args.out)
    try:
        report = evaluate(args.checkpoint, args.data_dir, args.split, args.beam_size, args.out, args.batch_size,
                          args.max_images, args.device, args.num_workers, synonyms=args.synonyms)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.out and _modified(args.out) != written_before:  # stopped while scoring: the captions are kept
            print(f"interrupted while scoring: the captions are in {args.out}, nothing was scored", file=sys.stderr)
        else:
            print(f"interrupted: nothing was scored{' and ' + args.out + ' was not written' if args.out else ''}",
                  file=sys.stderr)
        return 130
    except OSError as error:  # e.g. --out in a folder without write permission
        print(f"error: {error.strerror or error}: {error.filename or args.out}", file=sys.stderr)
        return 2
    report.pop("captions")
    for error in report.pop("skipped"):
        print(f"skipped unreadable image: {error}", file=sys.stderr)
    print(format_table(report), file=sys.stderr)
    print(json.dumps(report))
    return 0


def _modified(path: str | None) -> int | None:
    """A file's modification time in nanoseconds, None when there is none (or no path): whether a run wrote it."""
    try:
        return Path(path).stat().st_mtime_ns if path else None
    except OSError:
        return None


def format_table(report: dict[str, Any]) -> str:
    """Model and baseline metrics side by side."""
    keys = [key for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
            if key in report["model"]]
    lines = [f"{report['split']}: {report['images']} images, beam {report['beam_size']}, "
             f"{report['skipped_images']} skipped; METEOR {report['meteor']}",
             f"{'metric':<10}{'model':>10}{'baseline':>10}"]
    lines += [f"{key:<10}{report['model'][key]:>10.3f}{report['baseline'][key]:>10.3f}" for key in keys]
    lines.append(f"baseline caption: {report['baseline']['caption']!r}")
    if "bad_endings" in report:
        ends = report["bad_endings"]
        lines.append(f"cut off: {ends['model']:.3f} of the captions end on a word like 'a', 'on', 'and' "
                     f"(first reference: {ends['human']:.3f})")
    seen = format_object_scores(report)
    return "\n".join(lines + ([seen] if seen else []))


def format_object_scores(report: dict[str, Any]) -> str:
    """The object scores of a report beside the human ceiling (precision, recall, CHAIR), or "" without them."""
    scores = report.get("objects")
    if not scores:
        return ""
    lines = [f"{'objects':<10}{'model':>10}{'human':>10}   (objects named, from the instances; human: first reference)"]
    for key in ("precision", "recall", "CHAIRi", "CHAIRs"):
        lines.append(f"{key:<10}{_cell(scores['model'][key])}{_cell(scores['human'][key])}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:>10.3f}" if value is not None else f"{'-':>10}"


if __name__ == "__main__":
    sys.exit(main())
