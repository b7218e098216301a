"""Object-level score on synthetic splits: which colour-shape pairs a caption names, against the image's objects.

The synthetic generator records every object it draws (colour, shape, size, box) in the split's annotation file.
A caption is read for the colour-shape pairs it names, with the generator's own words (synonyms, plurals, sizes,
counts), and compared with the image:

    precision = named objects that are in the image / all named objects      (1 - CHAIRi, in COCO's terms)
    recall    = image objects that the caption names / all image objects

Both are micro-averaged over a split. Counts matter: "two red circles" names two red circles, and matches at most
as many as the image has. One human reference per image (the first) scored the same way is the ceiling.

    report = split_report(coco, captions)   # {"model": {...}, "human": {...}} or None when the split has no objects
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import synthetic_data

Pair = tuple[str, str]  # (colour, shape)

_TOKEN = re.compile(r"[a-z]+|[,:;]")
_COUNTS = {"a": 1, "an": 1, "one": 1, "single": 1, "another": 1, "two": 2, "both": 2, "three": 3, "four": 4,
           "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_KIND_WORDS = frozenset({"shape", "shapes", "object", "objects"})
_LIST_WORDS = frozenset({"a", "an", "and", ","})


@dataclass(frozen=True)
class _Vocabulary:
    colours: Mapping[str, str]
    shapes: Mapping[str, str]  # singular and plural nouns -> shape
    sizes: Mapping[str, str]
    plurals: frozenset[str]


@functools.cache
def _vocabulary() -> _Vocabulary:
    """The generator's words, read once."""
    words = synthetic_data.caption_vocabulary()
    plurals = frozenset(synthetic_data.plural_of(noun) for noun, shape in words["shapes"].items()
                        if synthetic_data.plural_of(noun) in words["shapes"])
    return _Vocabulary(words["colours"], words["shapes"], words["sizes"], plurals)


def tokens_of(caption: str) -> list[str]:
    """Lower-cased words and the punctuation that separates list items."""
    return _TOKEN.findall(caption.lower())


def named_objects(caption: str) -> Counter[Pair]:
    """The colour-shape pairs a caption names, with how many of each it says there are."""
    named: Counter[Pair] = Counter()
    for colour, shape, count in _mentions(tokens_of(caption)):
        # A pair named twice ("a red circle ... the red circle") is one object, unless a count says otherwise.
        named[(colour, shape)] = max(named[(colour, shape)], count)
    return named


def _mentions(tokens: Sequence[str]) -> Iterator[tuple[str, str, int]]:
    """(colour, shape, count) for each phrase that names objects."""
    words = _vocabulary()
    for index, token in enumerate(tokens):
        if token in words.colours:
            head = _skip_sizes(tokens, index + 1)
            if head < len(tokens) and tokens[head] in words.shapes:  # "two small red circles"
                yield words.colours[token], words.shapes[tokens[head]], _count(tokens, index, tokens[head])
            elif head < len(tokens) and tokens[head] in _KIND_WORDS:  # "two red shapes, a circle and a square"
                yield from ((words.colours[token], shape, 1) for shape in _listed_shapes(tokens, head + 1))
        elif token in words.plurals and not _follows_colour(tokens, index):  # "two circles, one red and one blue"
            yield from ((colour, words.shapes[token], 1) for colour in _listed_colours(tokens, index + 1))


def _skip_sizes(tokens: Sequence[str], index: int) -> int:
    """The first position at or after index that is not a size word."""
    while index < len(tokens) and tokens[index] in _vocabulary().sizes:
        index += 1
    return index


def _count(tokens: Sequence[str], colour_index: int, noun: str) -> int:
    """How many objects a "[count] [size] colour noun" phrase names; a bare plural means at least two."""
    index = colour_index - 1
    while index >= 0 and tokens[index] in _vocabulary().sizes:
        index -= 1
    if index >= 1 and tokens[index] == "of" and tokens[index - 1] == "pair":
        return 2
    if index >= 0 and tokens[index] in _COUNTS:
        return _COUNTS[tokens[index]]
    return 2 if noun in _vocabulary().plurals else 1


def _follows_colour(tokens: Sequence[str], index: int) -> bool:
    """Whether the noun at index is the head of a "colour [size] noun" phrase (counted there)."""
    before = index - 1
    while before >= 0 and tokens[before] in _vocabulary().sizes:
        before -= 1
    return before >= 0 and tokens[before] in _vocabulary().colours


def _listed_shapes(tokens: Sequence[str], index: int) -> list[str]:
    """Shapes of a list like ", a circle and a square" right after "colour shapes"; empty if none follows."""
    if index >= len(tokens) or tokens[index] not in {",", ":"}:
        return []
    words, shapes = _vocabulary(), []
    index += 1
    while index < len(tokens) and (tokens[index] in _LIST_WORDS or tokens[index] in words.sizes
                                   or tokens[index] in words.shapes):
        if tokens[index] in words.shapes:
            shapes.append(words.shapes[tokens[index]])
        index += 1
    return shapes


def _listed_colours(tokens: Sequence[str], index: int) -> list[str]:
    """Colours of a list like ", one red and one blue" right after a plural shape noun; empty if none follows."""
    if index >= len(tokens) or tokens[index] not in {",", ":"}:
        return []
    words, colours = _vocabulary(), []
    index += 1
    while index + 1 < len(tokens) and tokens[index] == "one" and tokens[index + 1] in words.colours:
        following = index + 2
        if following < len(tokens) and (tokens[following] in words.shapes or tokens[following] in words.sizes):
            break  # "one red circle" names its own shape
        colours.append(words.colours[tokens[index + 1]])
        index = following + 1 if following < len(tokens) and tokens[following] in {"and", ","} else following
    return colours


def image_objects(image: Mapping[str, Any]) -> Counter[Pair] | None:
    """How many objects of each colour-shape pair an image holds, or None if its record lists no objects."""
    objects = image.get("objects")
    if not isinstance(objects, list):
        return None
    return Counter((obj["colour"], obj["shape"]) for obj in objects)


@dataclass
class ObjectScore:
    """Counts behind object precision and recall, summed over captions (micro-averaged)."""

    captions: int = 0
    named: int = 0  # objects the captions name, counts included
    matched: int = 0  # of those, objects that are in the image
    objects: int = 0  # objects in the images
    colour_right: int = 0  # named objects whose colour is in the image (any shape)
    shape_right: int = 0  # named objects whose shape is in the image (any colour)

    def add(self, named: Counter[Pair], image: Counter[Pair]) -> None:
        """Add one caption's named pairs against its image's objects."""
        colours = {colour for colour, _ in image}
        shapes = {shape for _, shape in image}
        self.captions += 1
        self.named += sum(named.values())
        self.matched += sum(min(count, image[pair]) for pair, count in named.items())
        self.objects += sum(image.values())
        self.colour_right += sum(count for (colour, _), count in named.items() if colour in colours)
        self.shape_right += sum(count for (_, shape), count in named.items() if shape in shapes)

    @property
    def precision(self) -> float | None:
        """Named objects that are in the image / all named objects; None when nothing was named."""
        return self.matched / self.named if self.named else None

    @property
    def recall(self) -> float | None:
        """Image objects named / all image objects; None when there are no objects."""
        return self.matched / self.objects if self.objects else None

    def to_dict(self) -> dict[str, Any]:
        """The scores and the counts behind them, as plain values for JSON."""
        ratio = (lambda part: part / self.named if self.named else None)
        return {"precision": self.precision, "recall": self.recall, "colour_precision": ratio(self.colour_right),
                "shape_precision": ratio(self.shape_right), **asdict(self)}


def score_captions(captions: Mapping[int, str], objects: Mapping[int, Counter[Pair]]) -> ObjectScore:
    """Object precision and recall of one caption per image against the images' objects."""
    score = ObjectScore()
    for image_id, caption in captions.items():
        score.add(named_objects(caption), objects[image_id])
    return score


def split_objects(images: Mapping[int, Mapping[str, Any]], image_ids: Iterable[int] | None = None
                  ) -> dict[int, Counter[Pair]] | None:
    """Objects by image id (images: COCO's imgs) of image_ids (default all), or None unless each lists them."""
    objects = {image_id: image_objects(images[image_id]) for image_id in
               (images if image_ids is None else image_ids)}
    if not objects or any(found is None for found in objects.values()):
        return None
    return objects


def split_report(images: Mapping[int, Mapping[str, Any]], references: Mapping[int, Sequence[str]],
                 captions: Mapping[int, str]) -> dict[str, dict[str, Any]] | None:
    """Object scores of the captions and of the first human reference of the same images; None without objects."""
    objects = split_objects(images, captions)
    if objects is None:
        return None
    human = {image_id: references[image_id][0] for image_id in captions if references.get(image_id)}
    return {"model": score_captions(captions, objects).to_dict(),
            "human": score_captions(human, objects).to_dict()}
