"""Object scores for any COCO-format set: which annotated objects a caption names, read from the set's own files.

An image's objects are its annotations in instances_<split>.json (annotations.load_instances); the words that name
each category come from a synonym list in the format of COCO's (coco_synonyms.txt: one category a line, its name
first), found in this order: the list given (`evaluate.py --synonyms FILE`), annotations/synonyms.txt beside the
instances (the built-in generators write one), COCO's list when the categories are COCO's 80, else the categories'
own names. A caption is read for the categories it names, with how many of each ("two red circles", "a pair of
dogs", a bare plural is at least two), and compared with the image:

    precision = named objects that are in the image / all named objects            (counts included)
    recall    = image objects that the caption names / all image objects
    CHAIRi    = mentions of a category not in the image / all mentions              (Rohrbach et al. 2018)
    CHAIRs    = captions with at least one such mention / all captions

Precision and recall are micro-averaged over a split and read the instances alone; CHAIR follows the paper and
also counts as present the categories the image's other references name. A crowd annotation (iscrowd 1) stands for
any number of its category. One human reference per image (the first) scored the same way is the ceiling.

    vocabulary = split_vocabulary(data_dir, "test")         # None when the split has no instances file
    report = split_report(data_dir, "test", references, captions)   # {"model": {...}, "human": {...}} or None
"""
from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from captioning.annotations import annotation_path, load_coco, load_instances, object_files

COCO_SYNONYMS = Path(__file__).resolve().parent / "coco_synonyms.txt"
SET_SYNONYMS = "synonyms.txt"  # in a set's annotations folder

_TOKEN = re.compile(r"[a-z]+|[,:;.]")
_COUNTS = {"a": 1, "an": 1, "one": 1, "single": 1, "another": 1, "two": 2, "both": 2, "three": 3, "four": 4,
           "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_GROUPS = {"pair": 2, "couple": 2, "trio": 3}  # "a pair of red circles"
_STOPS = frozenset({"and", "or", ",", ":", ";", ".", "with", "of", "the", "to", "on", "in", "is", "are"})
_KIND_WORDS = frozenset({"shape", "object", "thing", "item"})  # "two red shapes, a circle and a square"
_LIST_WORDS = frozenset({"a", "an", "and", ","})
_IRREGULAR_PLURALS = {"men": "man", "women": "woman", "mice": "mouse", "geese": "goose", "teeth": "tooth",
                      "feet": "foot", "knives": "knife", "people": "people", "buses": "bus", "busses": "bus"}
# COCO's two-word names that the reference implementation of CHAIR reads as one word ("baby elephant" names no
# person, "passenger train" a train), and the mention a caption's other words cancel (a toilet's seat is no chair).
_COCO_PHRASES = {f"{age} {animal}": animal for age in ("baby", "adult") for animal in (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")}
_COCO_PHRASES.update({"passenger jet": "airplane", "passenger train": "train", "toilet seat": "toilet",
                      "bow tie": "tie"})
_COCO_CANCELLED = {"seat": "toilet"}


def singular(word: str, known: frozenset[str] = frozenset(), plurals: Mapping[str, str] | None = None) -> str:
    """The singular of an English noun by the few rules captions need; a word of the vocabulary is kept as it is,
    and the regular plural of one (plurals) read back to it ("pluses" -> "plus")."""
    if word in known:
        return word
    if plurals and word in plurals:
        return plurals[word]
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"  # puppies
    if word.endswith(("ches", "shes", "xes", "sses", "zzes")):
        return word[:-2]  # sandwiches, boxes, crosses
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def read_synonyms(path: str | Path) -> dict[str, str]:
    """A synonym list in COCO's format -> {phrase: category name}; ValueError for a file that is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"synonym list {path} is not UTF-8 text: give a list in the format of coco_synonyms.txt")
    table: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = [" ".join(_TOKEN.findall(word.lower())) for word in line.split(",")]
        words = [word for word in words if word]
        if words:
            table.update({word: words[0] for word in words})
    if not table:
        raise ValueError(f"synonym list {path} names no category: one line a category, its name first")
    return table


@dataclass(frozen=True)
class Vocabulary:
    """The phrases that name each category, as sequences of singular words, and what reading them needs."""

    phrases: Mapping[tuple[str, ...], str]
    cancelled: Mapping[str, str] = field(default_factory=dict)  # a one-word phrase dropped when that category is named
    known: frozenset[str] = frozenset()  # every word of every phrase: never singularised
    longest: int = 1
    nouns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # noun -> {modifier: category}
    plurals: Mapping[str, str] = field(default_factory=dict)  # the regular plural of each word -> the word

    @classmethod
    def of(cls, table: Mapping[str, str], cancelled: Mapping[str, str] | None = None) -> "Vocabulary":
        """From {phrase: category}, phrases as written ("red disk", "motor bike")."""
        phrases = {tuple(phrase.split()): category for phrase, category in table.items() if phrase.split()}
        nouns: dict[str, dict[str, str]] = {}
        for words, category in phrases.items():
            if len(words) == 2:  # "red circle": "two circles, one red and one blue" can name it
                nouns.setdefault(words[1], {})[words[0]] = category
        known = frozenset(word for words in phrases for word in words)
        return cls(phrases, dict(cancelled or {}), known, max(map(len, phrases), default=1), nouns,
                   {plural(word): word for word in known if plural(word) not in known})

    @property
    def categories(self) -> set[str]:
        return set(self.phrases.values())

    @property
    def head_words(self) -> set[str]:
        """The last word of every phrase, singular and plural as captions write it: the words a pointing game
        points with."""
        heads = {words[-1] for words in self.phrases}
        return heads | {plural(word) for word in heads}


def plural(noun: str) -> str:
    """The regular English plural of a noun (the inverse of singular for the words a vocabulary holds)."""
    if noun.endswith("y") and noun[-2:-1] not in set("aeiou"):
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh", "z")) else "s")


@dataclass(frozen=True)
class Mention:
    """One phrase of a caption that names objects: its category, how many it says, and where it stands (tokens)."""

    category: str
    count: int
    start: int
    end: int  # one past the last token: tokens[end - 1] is the phrase's noun


def tokens_of(caption: str) -> list[str]:
    """Lower-cased words and the punctuation that separates list items."""
    return _TOKEN.findall(caption.lower())


def mentions(tokens: Sequence[str], vocabulary: Vocabulary) -> list[Mention]:
    """Every phrase of the tokens that names a category, in order, longest phrases first ("teddy bear" is no
    bear), with the lists that name several at once ("two circles, one red and one blue")."""
    words = [singular(token, vocabulary.known, vocabulary.plurals) for token in tokens]
    found: list[Mention] = []
    index = 0
    while index < len(words):
        for length in range(min(vocabulary.longest, len(words) - index), 0, -1):
            category = vocabulary.phrases.get(tuple(words[index:index + length]))
            if category is not None:
                end = index + length
                found.append(Mention(category, _count(tokens, words, index, end), index, end))
                index = end
                break
        else:
            found += _listed(tokens, words, index, vocabulary)
            index += 1
    named = {mention.category for mention in found}
    return [mention for mention in found
            if not (mention.end - mention.start == 1 and vocabulary.cancelled.get(words[mention.start]) in named)]


def _count(tokens: Sequence[str], words: Sequence[str], start: int, end: int) -> int:
    """How many objects the phrase tokens[start:end] names: a count word up to two words before it ("two small red
    circles"), "a pair of" or "a trio of", else two for a plural and one for a singular."""
    for before in range(start - 1, max(start - 3, -1), -1):
        token = tokens[before]
        if token in _COUNTS:
            return _COUNTS[token]
        if token == "of" and before >= 1 and tokens[before - 1] in _GROUPS:
            return _GROUPS[tokens[before - 1]]
        if token in _STOPS:
            break
    return 2 if tokens[end - 1] != words[end - 1] else 1


def _listed(tokens: Sequence[str], words: Sequence[str], index: int, vocabulary: Vocabulary) -> list[Mention]:
    """Mentions of a list that factors a phrase: "red shapes, a circle and a square" (modifier first) or "circles,
    one red and one blue" (noun first); one object each. Empty when tokens[index] starts no such list."""
    if index + 1 >= len(tokens) or tokens[index + 1] not in {",", ":"}:
        return []
    word, found, position = words[index], [], index + 2
    if word in _KIND_WORDS and index >= 1:  # "<modifier> shapes, a circle and a square"
        modifier = words[index - 1]
        while position < len(tokens) and (tokens[position] in _LIST_WORDS or words[position] in vocabulary.nouns
                                          or tokens[position] not in _STOPS and position + 1 < len(tokens)
                                          and words[position + 1] in vocabulary.nouns):
            category = vocabulary.nouns.get(words[position], {}).get(modifier)
            if category is not None:
                found.append(Mention(category, 1, position, position + 1))
            position += 1
    elif word in vocabulary.nouns and tokens[index] != word:  # "<nouns>, one red and one blue"
        while position + 1 < len(tokens) and tokens[position] == "one":
            category = vocabulary.nouns[word].get(words[position + 1])
            if category is None or (position + 2 < len(tokens) and words[position + 2] in vocabulary.nouns):
                break  # "one red circle" names its own object
            found.append(Mention(category, 1, position + 1, position + 2))
            position += 3 if position + 2 < len(tokens) and tokens[position + 2] in {"and", ","} else 2
    return found


def named_objects(caption: str, vocabulary: Vocabulary) -> Counter[str]:
    """The categories a caption names, with how many of each it says there are; a category named twice ("a red
    circle ... the red circle") is one object unless a count says otherwise."""
    named: Counter[str] = Counter()
    for mention in mentions(tokens_of(caption), vocabulary):
        named[mention.category] = max(named[mention.category], mention.count)
    return named


@dataclass
class ImageObjects:
    """The objects of one image: how many of each category, and the categories annotated as crowds."""

    counts: Counter[str] = field(default_factory=Counter)
    crowds: set[str] = field(default_factory=set)

    def __contains__(self, category: str) -> bool:
        return category in self.counts or category in self.crowds


@dataclass
class ObjectScore:
    """Counts behind object precision, recall and CHAIR, summed over captions (micro-averaged)."""

    captions: int = 0
    named: int = 0  # objects the captions name, counts included
    matched: int = 0  # of those, objects that are in the image
    objects: int = 0  # objects in the images (a crowd counts one)
    found: int = 0  # of those, objects the captions name
    mentions: int = 0  # phrases that name a category
    hallucinated_mentions: int = 0  # of those, phrases whose category is not in the image (nor its other references)
    hallucinated_captions: int = 0

    def add(self, named: Counter[str], image: ImageObjects) -> None:
        """Add one caption's named categories against its image's objects."""
        self.captions += 1
        self.named += sum(named.values())
        self.matched += sum(count if category in image.crowds else min(count, image.counts[category])
                            for category, count in named.items())
        self.objects += sum(image.counts.values()) + len(image.crowds - set(image.counts))
        self.found += sum(min(count, image.counts[category] or (category in image.crowds))
                          for category, count in named.items())

    def add_mentions(self, found: Sequence[Mention], present: set[str]) -> None:
        """Add one caption's mentions for CHAIR, against the categories that count as present."""
        wrong = sum(mention.category not in present for mention in found)
        self.mentions += len(found)
        self.hallucinated_mentions += wrong
        self.hallucinated_captions += wrong > 0

    @property
    def precision(self) -> float | None:
        """Named objects that are in the image / all named objects; None when nothing was named."""
        return self.matched / self.named if self.named else None

    @property
    def recall(self) -> float | None:
        """Image objects named / all image objects; None when there are no objects."""
        return self.found / self.objects if self.objects else None

    def to_dict(self) -> dict[str, Any]:
        """The scores and the counts behind them, as plain values for JSON."""
        return {"precision": self.precision, "recall": self.recall,
                "CHAIRi": self.hallucinated_mentions / self.mentions if self.mentions else None,
                "CHAIRs": self.hallucinated_captions / self.captions if self.captions else None, **asdict(self)}


def score_captions(captions: Mapping[int, str], objects: Mapping[int, ImageObjects], vocabulary: Vocabulary,
                   references: Mapping[int, Sequence[str]] | None = None) -> ObjectScore:
    """Object precision, recall and CHAIR of one caption per image; CHAIR's present categories add those the
    references name (pass the references the caption is scored against, as the paper does)."""
    score = ObjectScore()
    for image_id, caption in captions.items():
        found = mentions(tokens_of(caption), vocabulary)
        image = objects[image_id]
        score.add(named_objects(caption, vocabulary), image)
        present = set(image.counts) | image.crowds
        for reference in (references or {}).get(image_id, []):
            present |= named_objects(reference, vocabulary).keys()
        score.add_mentions(found, present)
    return score


def read_objects(paths: Sequence[Path], image_ids: Iterable[int]) -> tuple[dict[int, ImageObjects], list[str]]:
    """Each image's objects from instances files, and the categories the files list (in the first file's order)."""
    objects = {image_id: ImageObjects() for image_id in image_ids}
    names: list[str] = []
    for path in paths:
        coco = load_instances(path)
        names += [category["name"] for category in coco.dataset["categories"] if category["name"] not in names]
        for annotation in coco.dataset.get("annotations", []):
            image = objects.get(annotation["image_id"])
            if image is not None:
                name = coco.cats[annotation["category_id"]]["name"]
                if annotation.get("iscrowd"):
                    image.crowds.add(name)
                else:
                    image.counts[name] += 1
    return objects, names


@functools.cache
def coco_vocabulary() -> Vocabulary:
    """COCO's 80 categories with the synonym list of Rohrbach et al. 2018 and the reference's two-word names."""
    table = read_synonyms(COCO_SYNONYMS)
    table.update({phrase: table[word] for phrase, word in _COCO_PHRASES.items()})
    return Vocabulary.of(table, _COCO_CANCELLED)


def vocabulary_for(categories: Sequence[str], annotations_dir: Path, synonyms: str | Path | None = None
                   ) -> Vocabulary:
    """The words that name a set's categories: the list given, the set's own synonyms.txt, COCO's list for COCO's
    categories, else the names themselves. Phrases for categories the set does not have are dropped."""
    if synonyms is None and (annotations_dir / SET_SYNONYMS).is_file():
        synonyms = annotations_dir / SET_SYNONYMS
    if synonyms is not None:
        table = read_synonyms(synonyms)
        table = {phrase: name for phrase, name in table.items() if name in categories}
        table.update({name: name for name in categories if name not in table})
        return Vocabulary.of(table)
    coco = coco_vocabulary()
    if set(categories) <= coco.categories:
        return coco
    return Vocabulary.of({" ".join(tokens_of(name)): name for name in categories})


def split_objects(data_dir: str | Path, split: str, image_ids: Iterable[int] | None = None,
                  synonyms: str | Path | None = None) -> tuple[dict[int, ImageObjects], Vocabulary] | None:
    """Each image's objects (default: every image of the split) and the vocabulary naming them, or None when the
    split has no instances file."""
    images = load_coco(annotation_path(data_dir, split)).imgs
    with contextlib.suppress(FileNotFoundError):
        paths = object_files(data_dir, "instances", split, (image["file_name"] for image in images.values()))
        found, names = read_objects(paths, images if image_ids is None else image_ids)
        return found, vocabulary_for(names, Path(data_dir) / "annotations", synonyms)
    return None


def split_report(data_dir: str | Path, split: str, references: Mapping[int, Sequence[str]],
                 captions: Mapping[int, str], synonyms: str | Path | None = None) -> dict[str, dict[str, Any]] | None:
    """Object scores of the captions and of the first human reference of the same images (its CHAIR against the
    other references, leaving it out); None when the split has no instances file."""
    read = split_objects(data_dir, split, captions, synonyms)
    if read is None:
        return None
    objects, vocabulary = read
    human = {image_id: references[image_id][0] for image_id in captions if references.get(image_id)}
    others = {image_id: references[image_id][1:] for image_id in human}
    return {"model": score_captions(captions, objects, vocabulary, references).to_dict(),
            "human": score_captions(human, objects, vocabulary, others).to_dict()}


def caption_errors(named: Counter[str], image: ImageObjects) -> dict[str, Counter[str]]:
    """What one caption got right about its image's objects, what it invented (a category not in the image, or more
    of one than there are) and what it missed, as counts per category, the way ObjectScore counts them (a crowd
    stands for any number and counts one)."""
    right: Counter[str] = Counter()
    invented: Counter[str] = Counter()
    for category, count in named.items():
        there = count if category in image.crowds else image.counts[category]
        right[category], invented[category] = min(count, there), count - min(count, there)
    objects = image.counts + Counter({category: 1 for category in image.crowds - set(image.counts)})
    missed = Counter({category: count - min(count, right[category]) for category, count in objects.items()})
    return {"right": +right, "invented": +invented, "missed": +missed}


def error_count(errors: dict[str, Counter[str]]) -> int:
    """Objects invented plus objects missed."""
    return sum(errors["invented"].values()) + sum(errors["missed"].values())


def split_errors(data_dir: str | Path, split: str, captions: Mapping[int, str], synonyms: str | Path | None = None
                 ) -> dict[int, dict[str, Counter[str]]] | None:
    """caption_errors of each captioned image of a split, or None when the split has no instances file."""
    read = split_objects(data_dir, split, captions, synonyms)
    if read is None:
        return None
    objects, vocabulary = read
    return {image_id: caption_errors(named_objects(caption, vocabulary), objects[image_id])
            for image_id, caption in captions.items()}


def pointed_mentions(words: Sequence[str], vocabulary: Vocabulary) -> Iterator[tuple[int, str]]:
    """(position of the noun, category) for each phrase of generated words that names a category: the word whose
    map the pointing game reads."""
    for mention in mentions(words, vocabulary):
        yield mention.end - 1, mention.category
