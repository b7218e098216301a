"""The easy synthetic set: one to three flat coloured shapes on a light, slightly noisy background.

Each image shows one to three flat shapes (ten colours, six shape types, two sizes); each comes with five varied,
human-like captions that are all true for it: colours, shapes, sizes, counts, positions and spatial relations read
off the pixel positions. The scenes are simple enough for a CNN trained from scratch on 96-pixel inputs, and the
captions depend on the image enough that a constant, image-blind caption scores badly. The front that writes it
(and the hard variety, hard.py) is prepare/synthetic/__init__.py; what both share is common.py.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from prepare.synthetic.common import (ALIGNED, BACKGROUNDS, CLEAR, COLOURS, SHAPES, RandomWording, Shape,
                                      boxes_apart, distinct_captions, draw_shape, plural_of, relation_families,
                                      unit_outline, with_article)

# Part of the parameters stored in each annotation file: bump it when drawing or captioning changes, so that
# an output made by older code is regenerated instead of being reported as complete.
GENERATOR_VERSION = 2
# Nominal diameter as a fraction of the shorter image side; the ratio of ~1.7 keeps the sizes apart after jitter.
SIZES = {"small": 0.20, "large": 0.34}
_SIZE_JITTER = 0.06
_POSITION_JITTER = 0.05  # fraction of the image side, around the centre of a 3x3 grid cell
_GAP = 0.02  # the least space between two shapes' boxes and between a shape and the border, as a fraction
_SHAPE_COUNT_PROBABILITIES = (0.55, 0.35, 0.10)
_PERIOD_PROBABILITY = 0.8


# --------------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Scene:
    """A whole image: background name, shapes, and the image size in pixels."""

    background: str
    shapes: tuple[Shape, ...]
    width: int
    height: int


def _box(shape: str, diameter: float, cx: float, cy: float) -> tuple[float, float, float, float]:
    """Box (x, y, w, h) of a shape of this diameter centred at (cx, cy)."""
    points = unit_outline(shape) * diameter
    w, h = points.max(axis=0) - points.min(axis=0)
    return (cx - w / 2, cy - h / 2, float(w), float(h))


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
        if all(boxes_apart(boxes[i], boxes[j], gap) for i in range(len(boxes)) for j in range(i)):
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

SHAPE_NOUNS = {"circle": ["circle", "circle", "circle", "disk"], "square": ["square"], "triangle": ["triangle"],
                "star": ["star"], "diamond": ["diamond"],
                "cross": ["cross"]}


SIZE_WORDS = {"small": ["small", "small", "little"], "large": ["large", "big"]}
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


class _Writer(RandomWording):
    """Builds true captions for one scene, with random wording from one random stream."""

    # Phrases -----------------------------------------------------------------------------------------------

    def noun(self, shape: Shape) -> str:
        return self.pick(SHAPE_NOUNS[shape.shape])

    def plural(self, kind: str) -> str:
        return plural_of(self.pick(SHAPE_NOUNS[kind]))

    def bare(self, shape: Shape, size_probability: float = 0.5) -> str:
        """Noun phrase without article: "[size] colour noun"."""
        words = [shape.colour, self.noun(shape)]
        if self.chance(size_probability):
            words.insert(0, self.pick(SIZE_WORDS[shape.size]))
        return " ".join(words)

    def np(self, shape: Shape, size_probability: float = 0.5) -> str:
        """Indefinite noun phrase: "a [size] colour noun"."""
        return with_article(self.bare(shape, size_probability))

    def the(self, shape: Shape) -> str:
        return f"the {shape.colour} {self.noun(shape)}"

    def background(self) -> str:
        return f"{self.scene.background} {self.pick(['background', 'background', 'backdrop'])}"

    def on_background(self) -> str:
        return f"{self.pick(['on', 'on', 'against'])} {with_article(self.scene.background)} background"

    def place(self, shape: Shape) -> str | None:
        """Where a shape is in the image, or None when its centre is near a boundary between regions."""
        key = _grid_position(self.scene, shape)
        return self.pick(_PLACES[key]) if key in _PLACES else None

    def relation(self, a: Shape, b: Shape) -> str | None:
        """A phrase true for "a <phrase> b", or None when no relation is clear."""
        families = relation_families(a, b, self.scene.width, self.scene.height)
        return self.pick(self.pick(families)) if families else None

    def ordered(self) -> list[Shape] | None:
        """Shapes from left to right, or None unless every pair is clearly apart horizontally."""
        shapes = sorted(self.scene.shapes, key=lambda s: s.centre[0])
        gaps = [(b.centre[0] - a.centre[0]) / self.scene.width for a, b in zip(shapes, shapes[1:])]
        return shapes if all(g >= CLEAR for g in gaps) else None

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
        if dx >= CLEAR and dy <= ALIGNED:
            return f"{self.np(a)} and {self.np(b)} side by side"
        if dy >= CLEAR and dx <= ALIGNED:
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
            return f"two {self.pick(SIZE_WORDS[a.size])} {self.kind_word(2)}: {self.np(a, 0.0)} and {self.np(b, 0.0)}"
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


def _grid_position(scene: Scene, shape: Shape) -> tuple[str | None, str | None]:
    """(row, column) region of a shape's centre; None on an axis where it is near a region boundary."""
    x = shape.centre[0] / scene.width
    y = shape.centre[1] / scene.height
    column = "left" if x < 0.3 else "right" if x > 0.7 else "centre" if 0.4 <= x <= 0.6 else None
    row = "top" if y < 0.3 else "bottom" if y > 0.7 else "middle" if 0.4 <= y <= 0.6 else None
    return row, column


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
