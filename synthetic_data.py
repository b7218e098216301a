"""Synthetic COCO-format caption dataset: coloured shapes with five true captions per image.

The project's built-in default dataset. Each image shows one to three flat shapes (ten colours, six shape types,
two sizes) on a light, slightly noisy background; each comes with five varied, human-like captions that are all
true for it: colours, shapes, sizes, counts, positions and spatial relations read off the pixel positions.
The scenes are simple enough for a CNN trained from scratch on 96-pixel inputs, and the captions depend on the
image enough that a constant, image-blind caption scores badly.

    python prepare_data.py synthetic --out data/synthetic

It writes what COCO has, in COCO's formats, under DIR/annotations/: per split, captions_<split>.json (the captions),
instances_<split>.json (each object's category "<colour> <shape>", box and visible pixels as RLE) and
stuff_<split>.json (the background's category and pixels, as COCO-Stuff does), and synonyms.txt (the words the
captions name each category with, in coco_synonyms.txt's format); the images go to DIR/images/<split>/.

`--variety hard` writes a harder set instead (textured backgrounds, counts, relations: synthetic_hard.py) with the
same writer; the easy set stays the default and is unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from annotations import annotation_path
from files import atomic_write, write_json_atomic

SPLITS = ("train", "val", "test")
# Part of the parameters stored in each annotation file: bump it when drawing or captioning changes, so that
# an output made by older code is regenerated instead of being reported as complete.
GENERATOR_VERSION = 2
# Each split draws from its own random streams, and its image ids start at a fixed base, so that changing the
# size of one split changes nothing in the others.
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
_ID_BASES = {"train": 0, "val": 1_000_000, "test": 2_000_000}
MAX_IMAGES_PER_SPLIT = 999_999
VARIETIES = ("easy", "hard")
MIN_SIDE, MAX_SIDE = 32, 4096
JPEG_QUALITY = 90

# Clearly distinct under JPEG and at 64 pixels, and all far from the light backgrounds. Ten colours and six
# shapes make sixty kinds of object, so that a constant caption rarely names the right one.
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 20),
    "orange": (245, 125, 15),
    "purple": (135, 45, 170),
    "pink": (240, 110, 175),
    "teal": (0, 150, 150),
    "brown": (120, 70, 30),
    "black": (25, 25, 25),
}
BACKGROUNDS = {
    "white": (246, 246, 244),
    "gray": (190, 190, 190),
    "beige": (232, 216, 182),
    "light blue": (190, 214, 240),
    "light green": (206, 234, 200),
    "pink": (246, 212, 222),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
# Nominal diameter as a fraction of the shorter image side; the ratio of ~1.7 keeps the sizes apart after jitter.
SIZES = {"small": 0.20, "large": 0.34}
_SIZE_JITTER = 0.06
_POSITION_JITTER = 0.05  # fraction of the image side, around the centre of a 3x3 grid cell
_GAP = 0.02  # the least space between two shapes' boxes and between a shape and the border, as a fraction
# A relation is stated only when the centres are this far apart (fraction of the side); "next to" also needs the
# centres aligned within _ALIGNED on the other axis. The grid layout keeps every pair clearly on one side or the other.
_CLEAR = 0.20
_ALIGNED = 0.12
_SHAPE_COUNT_PROBABILITIES = (0.55, 0.35, 0.10)
_PERIOD_PROBABILITY = 0.8


# --------------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its names and its box (x, y, width, height) in pixels."""

    colour: str
    shape: str
    size: str
    bbox: tuple[float, float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of the box, in pixels."""
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class Scene:
    """A whole image: background name, shapes, and the image size in pixels."""

    background: str
    shapes: tuple[Shape, ...]
    width: int
    height: int


def _star_outline(points: int = 5, inner_ratio: float = 0.45) -> np.ndarray:
    """Unit star polygon (outer radius 0.58), upright; a fat star stays recognisable at a dozen pixels."""
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.58, 0.58 * inner_ratio)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Polygons for a shape of nominal diameter 1, before centring on their box. Sizes are chosen so that the
# shapes look about equally big; the circle is drawn as an ellipse in a 1 x 1 box.
_OUTLINES = {
    "square": np.array([[-0.43, -0.43], [0.43, -0.43], [0.43, 0.43], [-0.43, 0.43]]),
    "triangle": np.array([[-0.56, 0.485], [0.56, 0.485], [0.0, -0.485]]),
    "star": _star_outline(),
    "diamond": np.array([[0.0, -0.56], [0.42, 0.0], [0.0, 0.56], [-0.42, 0.0]]),
    "cross": np.array([[-0.16, -0.47], [0.16, -0.47], [0.16, -0.16], [0.47, -0.16], [0.47, 0.16], [0.16, 0.16],
                       [0.16, 0.47], [-0.16, 0.47], [-0.16, 0.16], [-0.47, 0.16], [-0.47, -0.16], [-0.16, -0.16]]),
}


def _outline(shape: str) -> np.ndarray:
    """Unit polygon of a shape, shifted so that its box is centred on the origin; (points, 2)."""
    if shape == "circle":
        return np.array([[-0.5, -0.5], [0.5, 0.5]])  # the box corners stand in for the ellipse
    points = _OUTLINES[shape]
    return points - (points.min(axis=0) + points.max(axis=0)) / 2


def _box(shape: str, diameter: float, cx: float, cy: float) -> tuple[float, float, float, float]:
    """Box (x, y, w, h) of a shape of this diameter centred at (cx, cy)."""
    points = _outline(shape) * diameter
    w, h = points.max(axis=0) - points.min(axis=0)
    return (cx - w / 2, cy - h / 2, float(w), float(h))


def _boxes_apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    """Whether two boxes are separated by at least gap pixels along x or along y."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


def _place(rng: np.random.Generator, kinds: Sequence[str], diameters: list[float], width: int,
           height: int) -> list[tuple[float, float, float, float]] | None:
    """Boxes for the shapes in distinct cells of a 3x3 grid, jittered, not touching; None if no try fits."""
    gap = _GAP * min(width, height)
    for _ in range(200):
        cells = rng.choice(9, size=len(kinds), replace=False)
        jitter = rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, size=(len(kinds), 2))
        boxes = []
        for kind, diameter, cell, (jx, jy) in zip(kinds, diameters, cells, jitter):
            row, column = divmod(int(cell), 3)
            _, _, w, h = _box(kind, diameter, 0.0, 0.0)
            # Clamped so that the whole shape stays inside the image, away from the border.
            cx = float(np.clip((column + 0.5) / 3 * width + jx * width, w / 2 + gap, width - w / 2 - gap))
            cy = float(np.clip((row + 0.5) / 3 * height + jy * height, h / 2 + gap, height - h / 2 - gap))
            boxes.append(_box(kind, diameter, cx, cy))
        if all(_boxes_apart(boxes[i], boxes[j], gap) for i in range(len(boxes)) for j in range(i)):
            return boxes
    return None


def sample_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """Draw a random scene: 1-3 shapes with distinct (colour, shape) pairs, laid out on a jittered grid."""
    count = 1 + int(rng.choice(3, p=_SHAPE_COUNT_PROBABILITIES))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    pairs = rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False)
    colours = [list(COLOURS)[int(p) // len(SHAPES)] for p in pairs]
    kinds = [SHAPES[int(p) % len(SHAPES)] for p in pairs]
    sizes = ["large" if large else "small" for large in rng.random(count) < 0.5]
    side = min(width, height)
    while True:
        scale = rng.uniform(1 - _SIZE_JITTER, 1 + _SIZE_JITTER, size=count)
        diameters = [SIZES[size] * side * s for size, s in zip(sizes, scale)]
        boxes = _place(rng, kinds, diameters, width, height)
        if boxes is not None:
            break
        if "large" not in sizes:  # a programming error: small shapes always fit a 3x3 grid
            raise RuntimeError(f"cannot place {count} small shapes in a {width}x{height} image")
        # Rare: large shapes that do not fit together. Shrinking one keeps every caption true for the scene.
        sizes[sizes.index("large")] = "small"
    shapes = tuple(Shape(c, k, s, b) for c, k, s, b in zip(colours, kinds, sizes, boxes))
    return Scene(background, shapes, width, height)


def fitted_outline(unit: np.ndarray, bbox: Sequence[float]) -> list[tuple[float, float]]:
    """A unit polygon stretched to fill a box (x, y, width, height) exactly: the points a shape is drawn with."""
    x, y, w, h = bbox
    low, high = unit.min(axis=0), unit.max(axis=0)
    points = (unit - low) / (high - low) * np.array([w, h]) + np.array([x, y])
    return [tuple(p) for p in points.tolist()]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox: Sequence[float],
               unit_of: Callable[[str], np.ndarray] = _outline, **style) -> None:
    """Draw one shape filling its box (x, y, width, height): an ellipse for a circle, else the shape's unit polygon
    (unit_of(shape)) stretched to the box. style goes to Pillow's ellipse and polygon (fill, outline, width)."""
    x, y, w, h = bbox
    if shape == "circle":
        draw.ellipse([x, y, x + w, y + h], **style)
    else:
        draw.polygon(fitted_outline(unit_of(shape), bbox), **style)


def draw_scene(rng: np.random.Generator, scene: Scene) -> Image.Image:
    """Render a scene: a background with a mild gradient, flat shapes, and light pixel noise over everything."""
    height, width = scene.height, scene.width
    # Brightness varies more than tint, so that a background keeps looking like its name.
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32) + np.float32(rng.uniform(-8, 8))
    base += rng.uniform(-3, 3, size=3).astype(np.float32)
    slope_x, slope_y = rng.uniform(-14, 14, size=2).astype(np.float32)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)
    gradient = slope_x * xs[None, :] + slope_y * ys[:, None]  # (height, width)
    pixels = np.clip(base[None, None, :] + gradient[:, :, None], 0, 255).astype(np.uint8)  # (height, width, 3)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[shape.colour]) + rng.integers(-12, 13, size=3), 0, 255))
        draw_shape(draw, shape.shape, shape.bbox, fill=fill)
    noise = rng.standard_normal(size=(height, width, 3), dtype=np.float32) * 4.0
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def label_scene(scene: Scene) -> np.ndarray:
    """Which shape each pixel shows, as draw_scene draws it: (height, width) uint8, 0 for the background and k for
    the k-th shape of scene.shapes; a later shape covers an earlier one."""
    labels = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(labels)
    for number, shape in enumerate(scene.shapes, start=1):
        draw_shape(draw, shape.shape, shape.bbox, fill=number)
    return np.asarray(labels)


# ------------------------------------------------------------------------------------------------- captions

_SHAPE_NOUNS = {"circle": ["circle", "circle", "circle", "disk"], "square": ["square"], "triangle": ["triangle"],
                "star": ["star"], "diamond": ["diamond"],
                "cross": ["cross"]}


_SIZE_WORDS = {"small": ["small", "small", "little"], "large": ["large", "big"]}
# Keyed by (row, column) of the shape's centre, see _grid_position.
_PLACES = {
    ("top", "left"): ["in the top left corner", "in the upper left corner", "at the top left"],
    ("top", "centre"): ["at the top", "near the top", "at the top of the image"],
    ("top", "right"): ["in the top right corner", "in the upper right corner", "at the top right"],
    ("middle", "left"): ["on the left", "on the left side", "on the left side of the image"],
    ("middle", "centre"): ["in the center", "in the middle", "in the center of the image"],
    ("middle", "right"): ["on the right", "on the right side", "on the right side of the image"],
    ("bottom", "left"): ["in the bottom left corner", "in the lower left corner", "at the bottom left"],
    ("bottom", "centre"): ["at the bottom", "near the bottom", "at the bottom of the image"],
    ("bottom", "right"): ["in the bottom right corner", "in the lower right corner", "at the bottom right"],
}
# "Y with X to its left" says that X is to the left of Y: the phrase for "X <relation> Y", reworded for "Y with X".
_WITH_IT = {"to the left of": "to its left", "to the right of": "to its right", "above": "above it",
            "over": "over it", "below": "below it", "under": "under it", "beneath": "beneath it",
            "next to": "next to it", "beside": "beside it"}


class RandomWording:
    """What a scene's caption writer draws its wording with: one random stream, shared by every choice."""

    def __init__(self, rng: np.random.Generator, scene) -> None:
        self.rng = rng
        self.scene = scene

    def pick(self, options: Sequence):
        """One element, uniformly."""
        return options[int(self.rng.integers(len(options)))]

    def chance(self, probability: float) -> bool:
        """True with this probability."""
        return bool(self.rng.random() < probability)


class _Writer(RandomWording):
    """Builds true captions for one scene, with random wording from one random stream."""

    # Phrases -----------------------------------------------------------------------------------------------

    def noun(self, shape: Shape) -> str:
        return self.pick(_SHAPE_NOUNS[shape.shape])

    def plural(self, kind: str) -> str:
        return plural_of(self.pick(_SHAPE_NOUNS[kind]))

    def bare(self, shape: Shape, size_probability: float = 0.5) -> str:
        """Noun phrase without article: "[size] colour noun"."""
        words = [shape.colour, self.noun(shape)]
        if self.chance(size_probability):
            words.insert(0, self.pick(_SIZE_WORDS[shape.size]))
        return " ".join(words)

    def np(self, shape: Shape, size_probability: float = 0.5) -> str:
        """Indefinite noun phrase: "a [size] colour noun"."""
        return _with_article(self.bare(shape, size_probability))

    def the(self, shape: Shape) -> str:
        return f"the {shape.colour} {self.noun(shape)}"

    def background(self) -> str:
        return f"{self.scene.background} {self.pick(['background', 'background', 'backdrop'])}"

    def on_background(self) -> str:
        return f"{self.pick(['on', 'on', 'against'])} {_with_article(self.scene.background)} background"

    def place(self, shape: Shape) -> str | None:
        """Where a shape is in the image, or None when its centre is near a boundary between regions."""
        key = _grid_position(self.scene, shape)
        return self.pick(_PLACES[key]) if key in _PLACES else None

    def relation(self, a: Shape, b: Shape) -> str | None:
        """A phrase true for "a <phrase> b", or None when no relation is clear."""
        families = _relation_families(self.scene, a, b)
        return self.pick(self.pick(families)) if families else None

    def ordered(self) -> list[Shape] | None:
        """Shapes from left to right, or None unless every pair is clearly apart horizontally."""
        shapes = sorted(self.scene.shapes, key=lambda s: s.centre[0])
        gaps = [(b.centre[0] - a.centre[0]) / self.scene.width for a, b in zip(shapes, shapes[1:])]
        return shapes if all(g >= _CLEAR for g in gaps) else None

    def shuffled(self) -> list[Shape]:
        return [self.scene.shapes[int(i)] for i in self.rng.permutation(len(self.scene.shapes))]

    def kind_word(self, count: int) -> str:
        word = self.pick(["shape", "shape", "object"])
        return word + ("s" if count > 1 else "")

    # One object ------------------------------------------------------------------------------------------

    def one_plain(self) -> str:
        (s,) = self.scene.shapes
        return f"{self.np(s)} {self.on_background()}"

    def one_place(self) -> str | None:
        (s,) = self.scene.shapes
        place = self.place(s)
        return f"{self.np(s)} {self.pick(['', '', 'sitting ', 'placed '])}{place}" if place else None

    def one_there_is(self) -> str:
        (s,) = self.scene.shapes
        place = self.place(s)
        where = place if place and self.chance(0.5) else self.on_background()
        return f"there is {self.np(s)} {where}"

    def one_single(self) -> str:
        (s,) = self.scene.shapes
        return f"{self.pick(['a single', 'one', 'just one'])} {self.bare(s)} {self.on_background()}"

    def one_picture(self) -> str:
        (s,) = self.scene.shapes
        place = self.place(s)
        where = place if place and self.chance(0.5) else self.on_background()
        return f"{self.pick(['an image', 'a picture', 'a drawing'])} of {self.np(s)} {where}"

    def one_background_first(self) -> str:
        (s,) = self.scene.shapes
        place = self.place(s)
        tail = f" {place}" if place and self.chance(0.5) else ""
        return f"{self.background()} with {self.np(s)}{tail}"

    def one_the_is(self) -> str | None:
        (s,) = self.scene.shapes
        place = self.place(s)
        return f"{self.the(s)} is {place}" if place else None

    def one_only(self) -> str:
        (s,) = self.scene.shapes
        return f"only one {self.kind_word(1)}: {self.np(s)}"

    # Two objects -----------------------------------------------------------------------------------------

    def two_relation(self) -> str | None:
        a, b = self.shuffled()
        relation = self.relation(a, b)
        if relation is None:
            return None
        tail = f" {self.on_background()}" if self.chance(0.3) else ""
        return f"{self.np(a)} {relation} {self.np(b)}{tail}"

    def two_and(self) -> str:
        a, b = self.shuffled()
        return f"{self.np(a)} and {self.np(b)} {self.on_background()}"

    def two_colon(self) -> str:
        a, b = self.shuffled()
        return f"{self.pick(['two', 'two', 'a pair of'])} {self.kind_word(2)}: {self.np(a)} and {self.np(b)}"

    def two_background_colon(self) -> str:
        a, b = self.shuffled()
        relation = self.relation(a, b)
        link = relation if relation else "and"
        return f"two {self.kind_word(2)} {self.on_background()}: {self.np(a)} {link} {self.np(b)}"

    def two_there_is(self) -> str | None:
        a, b = self.shuffled()
        relation = self.relation(a, b)
        return f"there is {self.np(a)} {relation} {self.np(b)}" if relation else None

    def two_the_is(self) -> str | None:
        a, b = self.shuffled()
        relation = self.relation(a, b)
        return f"{self.the(a)} is {relation} {self.the(b)}" if relation else None

    def two_places(self) -> str | None:
        a, b = self.shuffled()
        place_a, place_b = self.place(a), self.place(b)
        if not (place_a and place_b):
            return None
        return f"{self.np(a)} {place_a} and {self.np(b)} {place_b}"

    def two_with_it(self) -> str | None:
        a, b = self.shuffled()
        relation = self.relation(b, a)
        return f"{self.np(a)} with {self.np(b)} {_WITH_IT[relation]}" if relation else None

    def two_arrangement(self) -> str | None:
        a, b = self.shuffled()
        dx = abs(a.centre[0] - b.centre[0]) / self.scene.width
        dy = abs(a.centre[1] - b.centre[1]) / self.scene.height
        if dx >= _CLEAR and dy <= _ALIGNED:
            return f"{self.np(a)} and {self.np(b)} side by side"
        if dy >= _CLEAR and dx <= _ALIGNED:
            return f"{self.np(a)} and {self.np(b)}, one above the other"
        return None

    def two_left_to_right(self) -> str | None:
        shapes = self.ordered()
        if shapes is None:
            return None
        return f"from left to right{self.pick([':', ','])} {self.np(shapes[0])} and {self.np(shapes[1])}"

    def two_grouped(self) -> str:
        """Two shapes summed up by what they share, if anything."""
        a, b = self.shuffled()
        if a.colour == b.colour:
            return f"two {a.colour} {self.kind_word(2)}, a {self.noun(a)} and a {self.noun(b)}"
        if a.shape == b.shape:
            return f"two {self.plural(a.shape)}, one {a.colour} and one {b.colour}"
        if a.size == b.size:
            return f"two {self.pick(_SIZE_WORDS[a.size])} {self.kind_word(2)}: {self.np(a, 0.0)} and {self.np(b, 0.0)}"
        return f"two {self.kind_word(2)} {self.on_background()}"

    # Three objects ---------------------------------------------------------------------------------------

    def three_colon(self) -> str:
        a, b, c = self.shuffled()
        return f"three {self.kind_word(3)}: {self.np(a)}, {self.np(b)} and {self.np(c)}"

    def three_list(self) -> str:
        a, b, c = self.shuffled()
        return f"{self.np(a)}, {self.np(b)} and {self.np(c)} {self.on_background()}"

    def three_there_are(self) -> str:
        return f"there are three {self.kind_word(3)} {self.on_background()}"

    def three_with_relation(self) -> str | None:
        a, b, _ = self.shuffled()
        relation = self.relation(a, b)
        if relation is None:
            return None
        return f"three {self.kind_word(3)}, with {self.np(a)} {relation} {self.np(b)}"

    def three_relation_and_place(self) -> str | None:
        a, b, c = self.shuffled()
        relation, place = self.relation(a, b), self.place(c)
        if not (relation and place):
            return None
        return f"{self.np(a)} {relation} {self.np(b)}, and {self.np(c)} {place}"

    def three_the_is_also(self) -> str | None:
        a, b, c = self.shuffled()
        relation = self.relation(a, b)
        if relation is None:
            return None
        return f"{self.the(a)} is {relation} {self.the(b)}, and there is also {self.np(c)}"

    def three_left_to_right(self) -> str | None:
        shapes = self.ordered()
        if shapes is None:
            return None
        first, middle, last = (self.np(s) for s in shapes)
        return f"from left to right{self.pick([':', ','])} {first}, {middle} and {last}"

    def three_grouped(self) -> str | None:
        """Two shapes that share a colour or a shape type, and the odd one out."""
        shapes = self.scene.shapes
        for i, j, k in ((0, 1, 2), (0, 2, 1), (1, 2, 0)):
            a, b, c = shapes[i], shapes[j], shapes[k]
            if a.colour == b.colour != c.colour:
                return f"two {a.colour} {self.kind_word(2)} and {self.np(c)}"
            if a.shape == b.shape != c.shape:
                return f"two {self.plural(a.shape)} and {self.np(c)}"
        return None


def plural_of(noun: str) -> str:
    """The plural the captions use for a shape noun."""
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def shape_words() -> dict[str, str]:
    """Every word the captions use to name a shape, singular and plural, -> the shape it names ("disks" -> circle)."""
    return caption_vocabulary()["shapes"]


def caption_vocabulary() -> dict[str, dict[str, str]]:
    """The words captions of either variety name objects with: {"colours": word -> colour, "shapes": noun or plural
    -> shape, "sizes": word -> size}, so that a parser of captions reads them with the generator's own words."""
    import synthetic_hard  # it builds on this module

    shapes = {}
    for table in (_SHAPE_NOUNS, synthetic_hard.SHAPE_NOUNS):
        for shape, nouns in table.items():
            for noun in nouns:
                shapes[noun] = shapes[plural_of(noun)] = shape
    sizes = {word: size for size, words in _SIZE_WORDS.items() for word in words}
    return {"colours": {colour: colour for colour in COLOURS}, "shapes": shapes, "sizes": sizes}


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _grid_position(scene: Scene, shape: Shape) -> tuple[str | None, str | None]:
    """(row, column) region of a shape's centre; None on an axis where it is near a region boundary."""
    x = shape.centre[0] / scene.width
    y = shape.centre[1] / scene.height
    column = "left" if x < 0.3 else "right" if x > 0.7 else "centre" if 0.4 <= x <= 0.6 else None
    row = "top" if y < 0.3 else "bottom" if y > 0.7 else "middle" if 0.4 <= y <= 0.6 else None
    return row, column


def _relation_families(scene: Scene, a: Shape, b: Shape) -> list[list[str]]:
    """Groups of synonymous phrases, each true for "a <phrase> b" from the centres of their boxes."""
    dx = (b.centre[0] - a.centre[0]) / scene.width
    dy = (b.centre[1] - a.centre[1]) / scene.height  # image y grows downwards
    families = []
    if dx >= _CLEAR:
        families.append(["to the left of"])
    if dx <= -_CLEAR:
        families.append(["to the right of"])
    if dy >= _CLEAR:
        families.append(["above", "above", "over"])
    if dy <= -_CLEAR:
        families.append(["below", "below", "under", "beneath"])
    if abs(dx) >= _CLEAR and abs(dy) <= _ALIGNED:
        families.append(["next to", "beside"])
    return families


# (template, weight, mentions every shape's colour and type); weights favour the informative templates.
_Template = tuple[Callable[[_Writer], "str | None"], float, bool]
_TEMPLATES: dict[int, list[_Template]] = {
    1: [(_Writer.one_plain, 3, True), (_Writer.one_place, 3, True), (_Writer.one_there_is, 2, True),
        (_Writer.one_single, 2, True), (_Writer.one_picture, 1, True),
        (_Writer.one_background_first, 1, True), (_Writer.one_the_is, 2, True), (_Writer.one_only, 1, True)],
    2: [(_Writer.two_relation, 4, True), (_Writer.two_and, 3, True), (_Writer.two_colon, 2, True),
        (_Writer.two_background_colon, 2, True), (_Writer.two_there_is, 1, True),
        (_Writer.two_the_is, 2, True), (_Writer.two_places, 2, True), (_Writer.two_with_it, 1, True),
        (_Writer.two_arrangement, 1, True), (_Writer.two_left_to_right, 1, True),
        (_Writer.two_grouped, 1, False)],
    3: [(_Writer.three_colon, 3, True), (_Writer.three_list, 3, True), (_Writer.three_there_are, 1, False),
        (_Writer.three_with_relation, 2, False), (_Writer.three_relation_and_place, 2, True),
        (_Writer.three_the_is_also, 1, True), (_Writer.three_left_to_right, 2, True),
        (_Writer.three_grouped, 1, False)],
}


def caption_scene(rng: np.random.Generator, scene: Scene, count: int = 5) -> list[str]:
    """Distinct true captions for a scene, at least two of which name every shape's colour and type."""
    return distinct_captions(rng, _Writer(rng, scene), _TEMPLATES[len(scene.shapes)], count, _PERIOD_PROBABILITY)


def distinct_captions(rng: np.random.Generator, captioner: object, templates: Sequence[tuple[Callable, float, bool]],
                      count: int,
                      period_probability: float) -> list[str]:
    """count distinct captions from weighted templates (each called with captioner), two of them complete ones."""
    weights = np.array([w for _, w, _ in templates], dtype=np.float64)
    captions: list[str] = []
    complete = 0
    for _ in range(1000):
        if len(captions) == count:
            break
        # Reserve the last slots for captions that name every shape, so each image's set describes it fully.
        need_complete = count - len(captions) <= 2 - complete
        usable = np.array([full or not need_complete for _, _, full in templates]) * weights
        index = int(rng.choice(len(templates), p=usable / usable.sum()))
        build, _, full = templates[index]
        # Tried templates fall back, so that an image's five captions tend to use five different wordings.
        weights[index] *= 0.2
        text = build(captioner)
        if text is None:
            continue
        text = text[0].upper() + text[1:] + ("." if rng.random() < period_probability else "")
        if text.rstrip(".") not in {c.rstrip(".") for c in captions}:
            captions.append(text)
            complete += full
    if len(captions) < count:  # a programming error: the templates always offer enough distinct wordings
        raise RuntimeError(f"only {len(captions)} distinct captions for scene {getattr(captioner, 'scene', None)}")
    return captions


# ------------------------------------------------------------------------------------------------- writing

_CONTRIBUTOR = "synthetic_data.py"
# The first line of the synonyms file: it says who wrote the file, so that a rerun knows it may replace it.
_SYNONYMS_HEADER = f"# Written by {_CONTRIBUTOR}: the words its captions name each object category with."
_BACKGROUND_ID_BASE = 101  # stuff categories (backgrounds) start here, clear of the object categories


@dataclass(frozen=True)
class _Variety:
    """What the writer needs from a variety of the set: its drawing and captioning, and its names."""

    sample: Callable  # (rng, width, height) -> scene
    draw: Callable  # (rng, scene) -> image
    label: Callable  # scene -> (height, width) uint8: 0 for the background, k for the k-th object drawn
    describe: Callable  # (rng, scene) -> captions
    version: int
    description: str
    shapes: tuple[str, ...]
    backgrounds: tuple[str, ...]
    nouns: dict[str, list[str]]  # shape -> the singular nouns captions name it with


def _variety(variety: str) -> _Variety:
    """The drawing, captioning and names of a variety of the set."""
    if variety == "easy":
        return _Variety(sample_scene, draw_scene, label_scene, caption_scene, GENERATOR_VERSION,
                        "Synthetic coloured shapes with five true captions per image", SHAPES, tuple(BACKGROUNDS),
                        _SHAPE_NOUNS)
    if variety != "hard":
        raise ValueError(f"variety must be one of {', '.join(VARIETIES)}, got {variety!r}.")
    import synthetic_hard  # it builds on this module

    return _Variety(synthetic_hard.sample_scene, synthetic_hard.draw_scene, synthetic_hard.label_scene,
                    synthetic_hard.caption_scene, synthetic_hard.GENERATOR_VERSION,
                    "Synthetic coloured shapes on textured backgrounds, with counts and relations, five true captions "
                    "per image", synthetic_hard.SHAPES, synthetic_hard.TEXTURES, synthetic_hard.SHAPE_NOUNS)


def _file_name(split: str, index: int) -> str:
    return f"synthetic_{split}_{index:06d}.jpg"


def _parameters(split: str, count: int, seed: int, width: int, height: int, variety: str = "easy") -> dict:
    if variety == "easy":  # as before varieties existed
        return {"split": split, "count": count, "seed": seed, "width": width, "height": height,
                "generator_version": GENERATOR_VERSION, "jpeg_quality": JPEG_QUALITY}
    return {"split": split, "count": count, "seed": seed, "width": width, "height": height, "variety": variety,
            "generator_version": _variety(variety).version, "jpeg_quality": JPEG_QUALITY}


def _split_files(out_dir: Path, split: str) -> dict[str, Path]:
    """A split's annotation files, in the order they are written: the captions file last, as the mark of a
    complete split."""
    folder = annotation_path(out_dir, split).parent
    return {"instances": folder / f"instances_{split}.json", "stuff": folder / f"stuff_{split}.json",
            "captions": annotation_path(out_dir, split)}


def _synonyms_file(out_dir: Path) -> Path:
    return annotation_path(out_dir, "train").parent / "synonyms.txt"


def _pair_ids(variety: _Variety) -> dict[tuple[str, str], int]:
    """Category id of every colour-shape pair, colour-major from 1: ("red", "circle") -> 1, ("red", "square") -> 2."""
    pairs = [(colour, shape) for colour in COLOURS for shape in variety.shapes]
    return {pair: number for number, pair in enumerate(pairs, start=1)}


def _object_categories(variety: _Variety) -> list[dict]:
    """COCO categories of every colour-shape pair: {"id": 1, "name": "red circle", "supercategory": "circle"}, ..."""
    return [{"id": number, "name": f"{colour} {shape}", "supercategory": shape}
            for (colour, shape), number in _pair_ids(variety).items()]


def _background_categories(variety: _Variety) -> list[dict]:
    """COCO-Stuff categories of every background, from _BACKGROUND_ID_BASE: 101 "white", ..."""
    return [{"id": number, "name": background, "supercategory": "background"}
            for number, background in enumerate(variety.backgrounds, start=_BACKGROUND_ID_BASE)]


def _synonyms_text(variety: _Variety) -> str:
    """The synonyms file, in coco_synonyms.txt's format: one category a line, its name first, then the other names
    its captions use (singular only: a reader singularises plurals)."""
    lines = [_SYNONYMS_HEADER,
             "# One object category a line: its name first, then every other name the captions give it."]
    for colour in COLOURS:
        for shape in variety.shapes:
            nouns = dict.fromkeys([shape, *variety.nouns[shape]])  # deduplicated, in order
            lines.append(", ".join(f"{colour} {noun}" for noun in nouns))
    return "\n".join(lines) + "\n"


def _segments(labels: np.ndarray, count: int) -> list[dict]:
    """The visible pixels of the background (first) and of each of count objects, from label_scene's labels:
    {"segmentation": compressed RLE with counts as str, "area": pixels}."""
    masks = labels[:, :, None] == np.arange(count + 1, dtype=labels.dtype)  # (height, width, 1 + count)
    encoded = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))
    areas = masks.sum(axis=(0, 1))
    return [{"segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
             "area": float(area)} for rle, area in zip(encoded, areas)]


def _annotate(image_id: int, scene, labels: np.ndarray, pair_ids: dict, background_ids: dict) -> tuple[list, dict]:
    """(instances annotations, stuff annotation) of one image: its objects in drawing order, then its background."""
    background, *objects = _segments(labels, len(scene.shapes))
    # Ids image_id * 10 + 1..6 for the objects and image_id * 10 for the background: unique across both files.
    instances = [{"id": image_id * 10 + number, "image_id": image_id,
                  "category_id": pair_ids[shape.colour, shape.shape], **segment,
                  "bbox": [round(v, 1) for v in shape.bbox], "iscrowd": 0}
                 for number, (shape, segment) in enumerate(zip(scene.shapes, objects), start=1)]
    stuff = {"id": image_id * 10, "image_id": image_id, "category_id": background_ids[scene.background],
             **background, "bbox": [0.0, 0.0, float(scene.width), float(scene.height)], "iscrowd": 0}
    return instances, stuff


def _is_complete(files: dict[str, Path], image_dir: Path, parameters: dict) -> bool:
    """Whether a split was already written with these parameters, every file of it, and its images are all still
    there."""
    images = None
    for path in files.values():
        try:
            with open(path, encoding="utf-8") as handle:
                existing = json.load(handle)
        except (OSError, ValueError):
            return False
        if not isinstance(existing, dict) or existing.get("info", {}).get("parameters") != parameters:
            return False
        images = existing.get("images", [])
    return all((image_dir / image["file_name"]).is_file() for image in images)


def _written_by_us(path: Path) -> bool:
    """Whether an annotation or synonyms file may be replaced: it is missing, or this generator wrote it."""
    if not path.exists():
        return True
    try:
        with open(path, encoding="utf-8") as handle:
            if path.suffix == ".txt":
                return handle.readline().rstrip("\n") == _SYNONYMS_HEADER
            info = json.load(handle).get("info", {})
    except (OSError, ValueError, AttributeError):  # unreadable, not text, not JSON, not a JSON object
        return False
    return isinstance(info, dict) and info.get("contributor") == _CONTRIBUTOR


def _write_synonyms(out_dir: Path, variety: _Variety) -> None:
    """Write the synonyms file, unless it already says the same (a rerun leaves complete files untouched)."""
    path = _synonyms_file(out_dir)
    text = _synonyms_text(variety)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _generate_split(out_dir: Path, split: str, count: int, seed: int, width: int, height: int,
                    verbose: bool, variety: str = "easy") -> tuple[Path, bool]:
    """Write one split's images, then its instances, stuff and captions files; returns (captions file, whether it
    was written)."""
    files = _split_files(out_dir, split)
    image_dir = out_dir / "images" / split
    parameters = _parameters(split, count, seed, width, height, variety)
    kind = _variety(variety)
    if _is_complete(files, image_dir, parameters):
        return files["captions"], False
    # Removed first: if this run is interrupted, no annotation file may vouch for a half-rewritten image folder.
    for path in reversed(files.values()):
        path.unlink(missing_ok=True)
    files["captions"].parent.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    object_categories, background_categories = _object_categories(kind), _background_categories(kind)
    pair_ids = _pair_ids(kind)
    background_ids = {category["name"]: category["id"] for category in background_categories}
    images, instances, stuff, captions = [], [], [], []
    for index in tqdm(range(1, count + 1), desc=f"synthetic {split}", disable=not verbose, leave=False):
        # One stream per image: image i is the same whatever the split size, and splits never share a stream.
        rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
        scene = kind.sample(rng, width, height)
        file_name = _file_name(split, index)
        kind.draw(rng, scene).save(image_dir / file_name, "JPEG", quality=JPEG_QUALITY)
        image_id = _ID_BASES[split] + index
        images.append({"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height})
        objects, background = _annotate(image_id, scene, kind.label(scene), pair_ids, background_ids)
        instances += objects
        stuff.append(background)
        for number, caption in enumerate(kind.describe(rng, scene), start=1):
            captions.append({"id": image_id * 10 + number, "image_id": image_id, "caption": caption})
    # Images left from an earlier, larger run of this split would otherwise linger unlisted.
    wanted = {image["file_name"] for image in images}
    for stale in image_dir.glob(f"synthetic_{split}_*.jpg"):
        if stale.name not in wanted:
            stale.unlink()
    info = {"description": kind.description, "version": str(kind.version), "contributor": _CONTRIBUTOR,
            "parameters": parameters}
    write_json_atomic(files["instances"], {"info": info, "licenses": [], "images": images, "annotations": instances,
                                           "categories": object_categories})
    write_json_atomic(files["stuff"], {"info": info, "licenses": [], "images": images, "annotations": stuff,
                                       "categories": background_categories})
    write_json_atomic(files["captions"], {"info": info, "licenses": [], "images": images, "annotations": captions})
    return files["captions"], True


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}.")


def generate(out_dir: str | os.PathLike, n_train: int = 3000, n_val: int = 500, n_test: int = 500, seed: int = 0,
             width: int = 128, height: int = 128, verbose: bool = False, variety: str = "easy") -> dict[str, Path]:
    """Write the synthetic dataset under out_dir, skipping splits already complete; returns split -> annotation file.

    variety "easy" is the built-in set described above; "hard" adds textures, counts and more (synthetic_hard.py)."""
    _variety(variety)  # checked before anything is written
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check(name, value, 0, MAX_IMAGES_PER_SPLIT)
    _check("seed", seed, 0, 2**63 - 1)
    _check("width", width, MIN_SIDE, MAX_SIDE)
    _check("height", height, MIN_SIDE, MAX_SIDE)
    out_dir = Path(out_dir)
    ours = [path for split in SPLITS for path in _split_files(out_dir, split).values()] + [_synonyms_file(out_dir)]
    for theirs in ours:  # all checked before anything is written
        if not _written_by_us(theirs):
            raise ValueError(f"{theirs} exists and was not written by the synthetic generator, so it is not "
                             f"replaced: give another output folder")
    _write_synonyms(out_dir, _variety(variety))
    paths = {}
    for split, count in zip(SPLITS, (n_train, n_val, n_test)):
        start = time.perf_counter()
        paths[split], written = _generate_split(out_dir, split, count, seed, width, height, verbose, variety)
        if verbose:
            status = f"written in {time.perf_counter() - start:.1f} s" if written else \
                "already complete with these parameters, nothing done"
            sides = f"{width}x{height}" if variety == "easy" else f"about {width}x{height}, {variety}"
            print(f"{split}: {count} images {sides}, {5 * count} captions -> {paths[split]} ({status})")
    return paths


def _bounded_integer(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number within [low, high], with a message saying which range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}{unit}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the synthetic-dataset options to a (sub)parser."""
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to write (annotations/, images/)")
    count = _bounded_integer(0, MAX_IMAGES_PER_SPLIT)
    side = _bounded_integer(MIN_SIDE, MAX_SIDE, " pixels")
    parser.add_argument("--train", type=count, default=3000, help="number of training images")
    parser.add_argument("--val", type=count, default=500, help="number of validation images")
    parser.add_argument("--test", type=count, default=500, help="number of test images")
    parser.add_argument("--seed", type=_bounded_integer(0, 2**63 - 1), default=0,
                        help="random seed; the same arguments give byte-identical files")
    parser.add_argument("--width", type=side, default=128, help="image width in pixels")
    parser.add_argument("--height", type=side, default=128, help="image height in pixels")
    parser.add_argument("--variety", choices=VARIETIES, default="easy",
                        help="easy: flat shapes on flat backgrounds (the built-in set); hard: textured backgrounds, "
                             "camouflaged objects, counts, relations, varied image sizes (synthetic_hard.py)")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset from parsed arguments, printing one line per split; returns the exit status."""
    try:
        generate(args.out, n_train=args.train, n_val=args.val, n_test=args.test, seed=args.seed,
                 width=args.width, height=args.height, verbose=True, variety=args.variety)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the synthetic dataset under {args.out} ({error.strerror or error}); "
              "choose a writable --out directory.", file=sys.stderr)
        return 1
    return 0
