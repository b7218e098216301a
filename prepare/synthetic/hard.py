"""The harder synthetic set: textured backgrounds, camouflaged objects, counts, relations, varied image sizes.

The easy set (easy.py) draws one to three flat shapes on a flat light background, which a captioner can
describe well without learning much about shapes. This variety adds what COCO has and the easy set lacks:

- textured or cluttered backgrounds: grass, sand, a sky gradient with clouds, stripes, a checkerboard, noise;
- objects that are sometimes of a colour the background also has (green on grass, blue in the sky, ...), drawn
  with a darker outline so that they stay visible;
- several objects of one kind ("two red circles"), up to six objects in all, of freely varying size;
- more names per shape (disk, disc and dot for a circle; box and block for a square; ...) and a seventh shape;
- spatial relations between groups of objects, true for every member of both groups;
- images of varied size and aspect ratio (width / height from 0.6 to 1.8, as COCO's photos, about --width x
  --height in area), objects anywhere in them.

Captions state no absolute position, only relations between objects. A centre crop of a wide image leaves some of
its objects out: the recipe's `image_fit` decides what the CNN sees (data_loader.Preprocess, docs/EXPERIMENTS.md).
Deterministic like the easy set and written by the same writer (common.py), which the front's
`generate(variety="hard")` (prepare/synthetic/__init__.py) and the command line hand this variety to:

    python prepare_data.py synthetic --variety hard --out data/synthetic_hard
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from prepare.synthetic.common import SHAPES as _EASY_SHAPES
from prepare.synthetic.common import (BACKGROUNDS, CLEAR, COLOURS, MAX_SIDE, MIN_SIDE, RandomWording, Shape,
                                      boxes_apart, distinct_captions, draw_shape, plural_of, relation_families,
                                      unit_outline, with_article)

# Stored in the annotation files of this variety instead of easy.GENERATOR_VERSION: bump it when the
# drawing or captioning here changes.
GENERATOR_VERSION = 3
SHAPES = _EASY_SHAPES + ("hexagon",)
TEXTURES = ("grass", "sand", "sky", "stripes", "checkerboard", "noise")
SHAPE_NOUNS = {"circle": ["circle", "circle", "disk", "disc", "dot"], "square": ["square", "square", "box", "block"],
               "triangle": ["triangle"], "star": ["star"], "diamond": ["diamond", "diamond", "rhombus"],
               "cross": ["cross", "cross", "plus"], "hexagon": ["hexagon"]}
# Object colours that the texture also shows (stripe and checker colours are drawn per image instead).
_CAMOUFLAGE = {"grass": ["green"], "sand": ["yellow", "orange", "brown"], "sky": ["blue"]}
_CAMOUFLAGE_PROBABILITY = 0.3
_GROUP_COUNT_PROBABILITIES = (0.35, 0.45, 0.20)  # one, two or three kinds of object
_MEMBER_COUNT_PROBABILITIES = (0.6, 0.28, 0.12)  # one, two or three objects of a kind
_MAX_OBJECTS = 6
_DIAMETER_RANGE = (0.11, 0.30)  # fraction of the shorter image side
_SMALL, _LARGE = 0.16, 0.25  # below: "small", above: "large", between: no size word
_AREA_RANGE = (0.65, 1.55)  # image area as a fraction of --width x --height
_ASPECT_RANGE = (0.6, 1.8)  # width / height, drawn log-uniformly
_GAP = 0.025
_PERIOD_PROBABILITY = 0.8
_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

_hexagon = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1) * 0.5
_HEXAGON = _hexagon - (_hexagon.min(axis=0) + _hexagon.max(axis=0)) / 2


@dataclass(frozen=True)
class Group:
    """Objects of one colour and shape, as a caption names them together."""

    colour: str
    shape: str
    members: tuple[Shape, ...]


@dataclass(frozen=True)
class HardScene:
    """A whole image: texture and its colours, groups of objects and the image size."""

    background: str
    texture_colours: tuple[str, ...]  # COLOURS names the texture shows (stripes, checkerboard, noise)
    groups: tuple[Group, ...]
    width: int
    height: int

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Every object of the scene."""
        return tuple(member for group in self.groups for member in group.members)

    @property
    def side(self) -> int:
        """The shorter side: the unit of the objects' sizes, the textures' scales and the relations' distances."""
        return min(self.width, self.height)


# ----------------------------------------------------------------------------------------------------- scenes


def outline_of(shape: str) -> np.ndarray:
    """Unit polygon of a shape centred on its box (the easy set's, plus the hexagon)."""
    return _HEXAGON if shape == "hexagon" else unit_outline(shape)


def _box(shape: str, diameter: float, cx: float, cy: float) -> tuple[float, float, float, float]:
    points = outline_of(shape) * diameter
    w, h = points.max(axis=0) - points.min(axis=0)
    return (cx - w / 2, cy - h / 2, float(w), float(h))


def _kinds(rng: np.random.Generator, camouflage: Sequence[str]) -> list[tuple[str, str, int]]:
    """(colour, shape, count) of each group: distinct colour-shape pairs, some in the background's colours."""
    groups = 1 + int(rng.choice(3, p=_GROUP_COUNT_PROBABILITIES))
    kinds: list[tuple[str, str, int]] = []
    while len(kinds) < groups:
        colours = camouflage if camouflage and rng.random() < _CAMOUFLAGE_PROBABILITY else list(COLOURS)
        colour = colours[int(rng.integers(len(colours)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        count = 1 + int(rng.choice(3, p=_MEMBER_COUNT_PROBABILITIES))
        # At most _MAX_OBJECTS in all, keeping one for each group still to come.
        count = min(count, _MAX_OBJECTS - sum(k[2] for k in kinds) - (groups - len(kinds) - 1))
        if all((colour, shape) != (c, s) for c, s, _ in kinds):
            kinds.append((colour, shape, count))
    return kinds


def _place(rng: np.random.Generator, shapes: Sequence[str], diameters: Sequence[float], width: int,
           height: int) -> list[tuple[float, float, float, float]] | None:
    """Boxes anywhere in the image, not touching each other; None if some object finds no room."""
    gap = _GAP * min(width, height)
    boxes: list[tuple[float, float, float, float]] = []
    for shape, diameter in zip(shapes, diameters):
        _, _, w, h = _box(shape, diameter, 0.0, 0.0)
        for _ in range(60):
            cx = rng.uniform(w / 2 + gap, width - w / 2 - gap)
            cy = rng.uniform(h / 2 + gap, height - h / 2 - gap)
            box = _box(shape, diameter, cx, cy)
            if all(boxes_apart(box, other, gap) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _size_name(diameter: float, side: int) -> str:
    return "small" if diameter < _SMALL * side else "large" if diameter > _LARGE * side else "medium"


def sample_scene(rng: np.random.Generator, width: int, height: int) -> HardScene:
    """Draw a random scene: an image of about width x height pixels in area and of varied aspect ratio, a texture,
    and groups of objects."""
    area = width * height * rng.uniform(*_AREA_RANGE)
    aspect = float(np.exp(rng.uniform(*np.log(_ASPECT_RANGE))))
    width, height = (int(np.clip(round(side), MIN_SIDE, MAX_SIDE)) for side in (np.sqrt(area * aspect),
                                                                                np.sqrt(area / aspect)))
    background = TEXTURES[int(rng.integers(len(TEXTURES)))]
    texture_colours: tuple[str, ...] = ()
    if background in ("stripes", "checkerboard", "noise"):
        count = 1 if background != "noise" else 2
        texture_colours = tuple(rng.choice(list(COLOURS), size=count, replace=False).tolist())
    kinds = _kinds(rng, _CAMOUFLAGE.get(background, list(texture_colours)))
    side = min(width, height)
    shapes = [shape for _, shape, count in kinds for _ in range(count)]
    diameters = rng.uniform(*_DIAMETER_RANGE, size=len(shapes)) * side
    while (boxes := _place(rng, shapes, diameters, width, height)) is None:
        diameters = diameters * 0.85  # crowded: smaller objects always fit in the end
    members = iter(zip(shapes, diameters, boxes))
    groups = []
    for colour, shape, count in kinds:
        placed = [next(members) for _ in range(count)]
        groups.append(Group(colour, shape, tuple(Shape(colour, shape, _size_name(d, side), b) for _, d, b in placed)))
    return HardScene(background, texture_colours, tuple(groups), width, height)


# ---------------------------------------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1], (height, width, channels): a random grid of cells, bilinearly upsampled."""
    grid = rng.uniform(0, 255, size=(cells, cells, channels)).astype(np.uint8)
    layers = [np.asarray(Image.fromarray(grid[:, :, c]).resize((width, height), Image.BILINEAR), dtype=np.float32)
              for c in range(channels)]
    return np.stack(layers, axis=2) / 127.5 - 1


def _coordinates(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), each (height, width)."""
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def _grass(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    w, h = scene.width, scene.height
    base = np.array([70, 140, 50], dtype=np.float32) + rng.uniform(-15, 15, size=3).astype(np.float32)
    # Blades: noise stretched vertically, plus darker and lighter patches.
    blades = np.asarray(Image.fromarray(rng.uniform(0, 255, size=(max(h // 6, 2), w)).astype(np.uint8))
                        .resize((w, h), Image.BILINEAR), dtype=np.float32)[:, :, None] / 127.5 - 1
    return base + 30 * blades + 25 * _smooth_noise(rng, w, h, 5)


def _sand(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    w, h = scene.width, scene.height
    base = np.array([214, 186, 132], dtype=np.float32) + rng.uniform(-12, 12, size=3).astype(np.float32)
    grains = rng.standard_normal(size=(h, w, 1)).astype(np.float32) * 14
    ripples = np.sin(_coordinates(w, h)[1] / (0.05 * scene.side) + rng.uniform(0, 6.3))[:, :, None] * 8
    return base + grains + ripples + 15 * _smooth_noise(rng, w, h, 6)


def _sky(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    w, h = scene.width, scene.height
    top = np.array([55, 115, 210], dtype=np.float32) + rng.uniform(-15, 15, size=3).astype(np.float32)
    bottom = np.array([185, 215, 245], dtype=np.float32)
    fraction = (_coordinates(w, h)[1] / max(h - 1, 1))[:, :, None]
    sky = top + (bottom - top) * fraction
    clouds = np.clip(_smooth_noise(rng, w, h, 4) * 2 - rng.uniform(0.4, 1.2), 0, 1)
    return sky + (250 - sky) * clouds


def _pattern_colours(rng: np.random.Generator, scene: HardScene) -> tuple[np.ndarray, np.ndarray]:
    """The two colours of stripes or a checkerboard: one from COLOURS (scene.texture_colours), one light tone."""
    light = np.array(list(BACKGROUNDS.values())[int(rng.integers(len(BACKGROUNDS)))],
                     dtype=np.float32)
    strong = np.array(COLOURS[scene.texture_colours[0]], dtype=np.float32)
    return (strong, light) if rng.random() < 0.5 else (light, strong)


def _stripes(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    first, second = _pattern_colours(rng, scene)
    x, y = _coordinates(scene.width, scene.height)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.06, 0.16) * scene.side
    band = ((x * np.cos(angle) + y * np.sin(angle)) / period) % 1 < 0.5
    return np.where(band[:, :, None], first, second)


def _checkerboard(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    first, second = _pattern_colours(rng, scene)
    x, y = _coordinates(scene.width, scene.height)
    cell = rng.uniform(0.06, 0.14) * scene.side
    checks = (np.floor(x / cell) + np.floor(y / cell)) % 2 == 0
    return np.where(checks[:, :, None], first, second)


def _noise(rng: np.random.Generator, scene: HardScene) -> np.ndarray:
    """Blotches of the texture's two colours and a light tone, with speckle."""
    w, h = scene.width, scene.height
    palette = np.array([COLOURS[c] for c in scene.texture_colours] + [(225, 225, 215)], dtype=np.float32)
    weights = _smooth_noise(rng, w, h, int(rng.integers(5, 10)), channels=len(palette)) * 4
    weights = np.exp(weights - weights.max(axis=2, keepdims=True))
    mixed = (weights / weights.sum(axis=2, keepdims=True)) @ palette  # (height, width, 3)
    return mixed + rng.standard_normal(size=(h, w, 3)).astype(np.float32) * 18


_TEXTURE_DRAWERS: dict[str, Callable[[np.random.Generator, HardScene], np.ndarray]] = {
    "grass": _grass, "sand": _sand, "sky": _sky, "stripes": _stripes, "checkerboard": _checkerboard, "noise": _noise}


def draw_scene(rng: np.random.Generator, scene: HardScene) -> Image.Image:
    """Render a scene: the texture, then each object filled and outlined, then light pixel noise over everything."""
    texture = _TEXTURE_DRAWERS[scene.background](rng, scene)
    image = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        colour = np.clip(np.array(COLOURS[shape.colour]) + rng.integers(-12, 13, size=3), 0, 255)
        fill = tuple(int(v) for v in colour)
        outline = tuple(int(v) for v in colour * 0.45)  # darker: an object on its own colour keeps its edge
        _draw_object(draw, scene, shape, fill, outline)
    noise = rng.standard_normal(size=(scene.height, scene.width, 3), dtype=np.float32) * 4.0
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


def _draw_object(draw: ImageDraw.ImageDraw, scene: HardScene, shape: Shape, fill, outline) -> None:
    """One object, filled and outlined: the one drawing call of both draw_scene and label_scene."""
    line = max(1, round(scene.side / 70))
    draw_shape(draw, shape.shape, shape.bbox, outline_of, fill=fill, outline=outline, width=line)


def label_scene(scene: HardScene) -> np.ndarray:
    """Which object each pixel shows, as draw_scene draws it, outline included: (height, width) uint8, 0 for the
    background and k for the k-th object of scene.shapes; a later object covers an earlier one."""
    labels = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(labels)
    for number, shape in enumerate(scene.shapes, start=1):
        # Fill and outline in two inks, as in the image: Pillow skips an outline of the fill's own ink, and a
        # one-pixel outline reaches pixels that the fill does not.
        _draw_object(draw, scene, shape, 2 * number - 1, 2 * number)
    return (np.asarray(labels) + 1) // 2


# --------------------------------------------------------------------------------------------------- captions

_ON_BACKGROUND = {
    "grass": ["on grass", "on the grass", "on green grass", "on a grassy background"],
    "sand": ["on sand", "on the sand", "on a sandy background"],
    "sky": ["against the sky", "against a blue sky", "in the sky", "on a sky background"],
    "stripes": ["on a striped background", "on stripes", "against stripes"],
    "checkerboard": ["on a checkerboard", "on a checkered background", "on a checkerboard background"],
    "noise": ["on a noisy background", "on a speckled background", "on a blotchy background"],
}
_BACKGROUND_FIRST = {
    "grass": ["a grassy field", "a patch of grass", "green grass"],
    "sand": ["a sandy background", "a patch of sand", "sand"],
    "sky": ["a blue sky", "the sky", "a cloudy sky"],
    "stripes": ["a striped background", "stripes"],
    "checkerboard": ["a checkerboard", "a checkered background"],
    "noise": ["a noisy background", "a speckled background"],
}
_SIZE_WORDS = {"small": ["small", "little"], "large": ["large", "big"]}


def _relation_families(scene: HardScene, a: Group, b: Group) -> list[list[str]]:
    """Phrases true for "a <phrase> b" for every member of a and every member of b."""
    families = None
    for first in a.members:
        for second in b.members:
            pair = relation_families(first, second, scene.side, scene.side)  # fractions of the shorter side
            keys = {family[0] for family in pair}
            families = keys if families is None else families & keys
    return [family for family in _RELATIONS if family[0] in (families or set())]


_RELATIONS = [["to the left of"], ["to the right of"], ["above", "above", "over"],
              ["below", "below", "under", "beneath"], ["next to", "beside"]]


class _HardWriter(RandomWording):
    """Builds true captions for one hard scene, with random wording from one random stream."""

    def group(self, group: Group) -> str:
        """"a small red circle", "two red disks", "a pair of blue boxes", "three green stars"."""
        noun = self.pick(SHAPE_NOUNS[group.shape])
        count = len(group.members)
        if count == 1:
            size = group.members[0].size
            words = [group.colour, noun]
            if size in _SIZE_WORDS and self.chance(0.5):
                words.insert(0, self.pick(_SIZE_WORDS[size]))
            return with_article(" ".join(words))
        number = "a pair of" if count == 2 and self.chance(0.25) else _NUMBERS[count]
        return f"{number} {group.colour} {plural_of(noun)}"

    def listing(self, groups: Sequence[Group]) -> str:
        phrases = [self.group(group) for group in groups]
        return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"

    def shuffled(self) -> list[Group]:
        return [self.scene.groups[int(i)] for i in self.rng.permutation(len(self.scene.groups))]

    def on_background(self) -> str:
        return self.pick(_ON_BACKGROUND[self.scene.background])

    def total(self) -> str:
        count = len(self.scene.shapes)
        noun = self.pick(["shape", "shape", "object"]) + ("s" if count > 1 else "")
        return f"{self.pick(['a single', 'one', 'only one'])} {noun}" if count == 1 else f"{_NUMBERS[count]} {noun}"

    # Templates -------------------------------------------------------------------------------------------

    def listed(self) -> str:
        return f"{self.listing(self.shuffled())} {self.on_background()}"

    def counted(self) -> str:
        return f"{self.total()}{self.pick([':', ','])} {self.listing(self.shuffled())}"

    def background_first(self) -> str:
        return f"{self.pick(_BACKGROUND_FIRST[self.scene.background])} with {self.listing(self.shuffled())}"

    def there_are(self) -> str:
        groups = self.shuffled()
        verb = "is" if len(groups[0].members) == 1 else "are"
        return f"there {verb} {self.listing(groups)} {self.on_background()}"

    def related(self) -> str | None:
        if len(self.scene.groups) < 2:
            return None
        a, b, *rest = self.shuffled()
        families = _relation_families(self.scene, a, b)
        if not families:
            return None
        text = f"{self.group(a)} {self.pick(self.pick(families))} {self.group(b)}"
        return f"{text}, and {self.listing(rest)}" if rest else text

    def left_to_right(self) -> str | None:
        shapes = sorted(self.scene.shapes, key=lambda s: s.centre[0])
        if len(shapes) < 2 or any(len(g.members) > 1 for g in self.scene.groups):
            return None
        gaps = [(b.centre[0] - a.centre[0]) / self.scene.side for a, b in zip(shapes, shapes[1:])]
        if min(gaps) < CLEAR:
            return None
        groups = {group.members[0]: group for group in self.scene.groups}
        return f"from left to right{self.pick([':', ','])} {self.listing([groups[s] for s in shapes])}"

    def only_count(self) -> str:
        return f"{self.total()} {self.on_background()}"

    def only_kinds(self) -> str:
        """Shapes without their colours: true, but names no colour-shape pair."""
        counts: dict[str, int] = {}
        for group in self.shuffled():  # "four stars", not "two stars and two stars"
            counts[group.shape] = counts.get(group.shape, 0) + len(group.members)
        phrases = []
        for shape, count in counts.items():
            noun = self.pick(SHAPE_NOUNS[shape])
            phrases.append(with_article(noun) if count == 1 else f"{_NUMBERS[count]} {plural_of(noun)}")
        listed = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
        return f"{listed} {self.on_background()}"


# (template, weight, names every object with its colour, shape and count)
_TEMPLATES: list[tuple[Callable[[_HardWriter], "str | None"], float, bool]] = [
    (_HardWriter.listed, 3, True), (_HardWriter.counted, 2, True), (_HardWriter.background_first, 2, True),
    (_HardWriter.there_are, 2, True), (_HardWriter.related, 4, True), (_HardWriter.left_to_right, 1, True),
    (_HardWriter.only_count, 1, False), (_HardWriter.only_kinds, 1, False),
]


def caption_scene(rng: np.random.Generator, scene: HardScene, count: int = 5) -> list[str]:
    """Distinct true captions for a hard scene, at least two of which name every object."""
    return distinct_captions(rng, _HardWriter(rng, scene), _TEMPLATES, count, _PERIOD_PROBABILITY)
