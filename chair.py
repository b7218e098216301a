"""CHAIR on COCO: how often captions name one of COCO's 80 object categories that is not in the image.

From Rohrbach, Hendricks et al. 2018, "Object Hallucination in Image Captioning" (EMNLP), following their
reference implementation (github.com/LisaAnne/Hallucination, utils/chair.py) as far as it runs offline:

    CHAIRi = object mentions not in the image / all object mentions
    CHAIRs = captions with at least one such mention / all captions

A word is an object mention when, lower-cased and singularised, it is one of the categories' synonyms
(coco_synonyms.txt, the paper's list); a few two-word names are read as one ("hot dog" is no dog, "baby giraffe"
no person). An image's objects are the categories of its instance annotations (instances_<split>.json from
COCO's annotations zip) plus the objects its reference captions mention, as in the paper. Differences from the
reference: words are split with a regular expression instead of NLTK's punkt, plurals are singularised by a few
English rules instead of pattern.en, and the list's stray spaces are stripped (so "motor bike" counts).

    report = split_report(data_dir / "annotations", split, coco.imgs, references, captions)
    report["model"]["CHAIRi"], report["human"]["CHAIRs"]    # report is None without instance annotations
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SYNONYMS_FILE = Path(__file__).resolve().parent / "coco_synonyms.txt"

# Two-word names read as one word, mapped to the word that is looked up (the reference's special cases): COCO
# names, and qualifiers that would otherwise count as a person ("baby elephant", "passenger train").
_DOUBLE_WORDS = {name: name for name in (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate")}
_DOUBLE_WORDS.update({f"{age} {animal}": animal for age in ("baby", "adult") for animal in (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")})
_DOUBLE_WORDS.update({"passenger jet": "jet", "passenger train": "train", "bow tie": "tie",
                      "toilet seat": "toilet"})
_IRREGULAR_PLURALS = {"men": "man", "women": "woman", "mice": "mouse", "geese": "goose", "teeth": "tooth",
                      "feet": "foot", "knives": "knife", "sheep": "sheep", "buses": "bus", "busses": "bus"}
_WORD = re.compile(r"[a-z]+")


@functools.cache
def synonyms(path: Path = SYNONYMS_FILE) -> dict[str, str]:
    """Every synonym (and COCO name) -> its category's COCO name, read from the paper's list."""
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = [word.strip().lower() for word in line.split(",") if word.strip()]
        table.update({word: words[0] for word in words})
    return table


def singular(word: str) -> str:
    """The singular of an English noun, by the few rules COCO captions need; known words are kept as they are."""
    if word in synonyms() or word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"  # puppies
    if word.endswith(("ches", "shes", "xes", "sses", "zzes")):
        return word[:-2]  # sandwiches, glasses
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def caption_objects(caption: str) -> list[str]:
    """The COCO categories a caption mentions, once per mention, in order."""
    words = [singular(word) for word in _WORD.findall(caption.lower())]
    merged, index = [], 0
    while index < len(words):
        pair = " ".join(words[index:index + 2])
        if index + 1 < len(words) and pair in _DOUBLE_WORDS:
            merged.append(_DOUBLE_WORDS[pair])
            index += 2
        else:
            merged.append(words[index])
            index += 1
    if "toilet" in merged:  # a toilet's seat is no chair
        merged = [word for word in merged if word != "seat"]
    table = synonyms()
    return [table[word] for word in merged if word in table]


def instance_files(annotations_dir: Path, split: str, file_names: Iterable[str]) -> list[Path] | None:
    """The instances_*.json files covering a split's images, or None if one is missing.

    An image comes from the split's own name (captions_val2014.json -> instances_val2014.json) or, when its file
    name has a folder (val5k, Karpathy splits: "val2014/COCO_val2014_....jpg"), from that folder's file."""
    sources = sorted({name.split("/", 1)[0] if "/" in name else split for name in file_names})
    paths = [Path(annotations_dir) / f"instances_{source}.json" for source in sources]
    return paths if paths and all(path.is_file() for path in paths) else None


def instance_objects(paths: Sequence[Path], image_ids: Iterable[int]) -> dict[int, set[str]]:
    """COCO category names of the instance annotations of the given images, read from instance files."""
    objects: dict[int, set[str]] = {image_id: set() for image_id in image_ids}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            names = {category["id"]: category["name"] for category in data["categories"]}
            for annotation in data["annotations"]:
                if annotation["image_id"] in objects:
                    objects[annotation["image_id"]].add(names[annotation["category_id"]])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a COCO instance annotation file ({error!r}); replace it with the one "
                             "from COCO's annotations zip or remove it") from None
    return objects


def split_instances(annotations_dir: Path, split: str, images: Mapping[int, Mapping[str, Any]]
                    ) -> dict[int, set[str]] | None:
    """Categories of each image's instance annotations, or None when the split's instance files are not there."""
    paths = instance_files(annotations_dir, split, (image["file_name"] for image in images.values()))
    return None if paths is None else instance_objects(paths, images)


def chair_scores(captions: Mapping[int, str], ground_truth: Mapping[int, set[str]]) -> dict[str, Any]:
    """CHAIRi and CHAIRs of one caption per image, with the counts behind them."""
    mentions = hallucinated = hallucinated_captions = 0
    for image_id, caption in captions.items():
        found = caption_objects(caption)
        wrong = sum(name not in ground_truth[image_id] for name in found)
        mentions += len(found)
        hallucinated += wrong
        hallucinated_captions += wrong > 0
    return {"CHAIRi": hallucinated / mentions if mentions else None,
            "CHAIRs": hallucinated_captions / len(captions) if captions else None,
            "captions": len(captions), "mentions": mentions, "hallucinated_mentions": hallucinated,
            "hallucinated_captions": hallucinated_captions}


def split_report(annotations_dir: Path, split: str, images: Mapping[int, Mapping[str, Any]],
                 references: Mapping[int, Sequence[str]], captions: Mapping[int, str]) -> dict[str, Any] | None:
    """CHAIR of the captions and of a human reference (the first, its image's objects taken from the instances and
    the other references), or None when the split's instance annotations are not there."""
    instances = split_instances(annotations_dir, split, {image_id: images[image_id] for image_id in captions})
    if instances is None:
        return None
    model_truth = {image_id: instances[image_id].union(*map(caption_objects, references.get(image_id, [])))
                   for image_id in captions}
    # Leave one out: the first reference against the instances and the other references, as a model is scored.
    human_truth = {image_id: instances[image_id].union(*map(caption_objects, references[image_id][1:]))
                   for image_id in captions if references.get(image_id)}
    human = {image_id: references[image_id][0] for image_id in human_truth}
    return {"model": chair_scores(captions, model_truth), "human": chair_scores(human, human_truth)}
