"""A second, independent synthetic caption set, in COCO's formats: other objects, colours, backgrounds and wording.

Written as another lab would write it, to check that the captioning recipe generalises beyond the generator it was
tuned on: it imports none of the project's generators (synthetic_data.py, synthetic_hard.py, synthetic_common.py)
nor any project module, and shares with them only the file formats. Each image, of aspect ratio 0.6 to 1.8, shows
one to five objects anywhere in it (hearts, arrows, rings, moons, houses, trees, fish and lightning bolts in nine
colours), sometimes a tight cluster of tiny identical ones, on one of six drawn textures; its five captions are all
true for it and name colours, kinds, counts and relations in this generator's own wording.

    python tools/other_generator.py --out data/other --train 3000 --val 500 --test 500 --seed 0
    python tools/other_generator.py --out data/other_plain --no-synonyms     # category names only

It writes DIR/annotations/captions_<split>.json, instances_<split>.json (category "<colour> <kind>", supercategory
the kind; each object's segmentation as the polygon it was drawn with, a cluster as one iscrowd annotation in
uncompressed RLE), stuff_<split>.json (the background texture, compressed RLE, as COCO-Stuff) and, unless
--no-synonyms, synonyms.txt (the other words its captions use for each category, in coco_synonyms.txt's format);
the JPEG images go to DIR/images/<split>/. The same arguments give byte-identical files. A file in DIR/annotations
that this tool did not write is never replaced: the run stops before writing anything.
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

CONTRIBUTOR = "tools/other_generator.py"  # recorded in every file it writes: a rerun replaces only those
VERSION = 1  # bump when drawing or wording changes
SYNONYMS_HEADER = f"# Written by {CONTRIBUTOR}: the words its captions name each object category with."
SPLITS = ("train", "val", "test")
ID_STRIDE = 10_000_000  # image ids: 10_000_001.. for train, 20_000_001.. for val, 30_000_001.. for test
JPEG_QUALITY = 92
ASPECT_RANGE = (0.6, 1.8)  # width / height, drawn log-uniformly
MIN_SIDE = 96  # the smallest --side: a cluster of tiny objects, and five others, still fit
SUPERSAMPLE = 4  # objects are drawn at this many times the resolution, for smooth edges
STUFF_ID_BASE = 92  # background categories from here, as COCO-Stuff numbers its own after COCO's objects

COLOURS = {"crimson": (200, 24, 56), "navy": (26, 38, 122), "olive": (110, 122, 26), "gold": (238, 186, 26),
           "violet": (148, 80, 216), "turquoise": (46, 206, 190), "grey": (128, 128, 128),
           "white": (250, 250, 250), "black": (20, 20, 20)}
# The kind is the category's noun; the other nouns are the captions' synonyms (repeats weight the choice).
NOUNS = {"heart": ["heart"], "arrow": ["arrow"], "ring": ["ring", "ring", "hoop"],
         "moon": ["moon", "moon", "crescent", "crescent moon"], "house": ["house", "house", "cottage", "hut"],
         "tree": ["tree", "tree", "pine tree", "fir tree"], "fish": ["fish"],
         "bolt": ["lightning bolt", "lightning bolt", "bolt"]}
KINDS = tuple(NOUNS)
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
OBJECT_COUNT_WEIGHTS = (0.22, 0.26, 0.22, 0.16, 0.14)  # one to five objects (a cluster counts as one)
GROUP_SIZE_WEIGHTS = (0.55, 0.25, 0.12, 0.05, 0.03)  # objects of one category: one to five
CLUSTER_PROBABILITY = 0.2
MIN_CONTRAST = 100  # an object colour closer than this (RGB distance) to a colour of its background is not used


@dataclass(frozen=True)
class Background:
    """A texture: its COCO-Stuff supercategory, the colours it shows, and how captions speak of it."""

    supercategory: str
    palette: tuple[tuple[int, int, int], ...]
    places: tuple[str, ...]  # "on a brick wall"
    subjects: tuple[str, ...]  # "a brick wall" (with ...)
    predicates: tuple[str, ...]  # "hang{s} on a brick wall": {s} and {is} agree with the subject


BACKGROUNDS = {
    "wood": Background("material", ((200, 154, 100), (150, 104, 62)),
                       ("on a wooden table", "on wood", "on a wooden floor", "on a wood grain background"),
                       ("a wooden table", "a wooden board", "a plank floor"),
                       ("lie{s} on a wooden table", "rest{s} on a wooden board", "{is} scattered on a wooden floor")),
    "brick": Background("wall", ((165, 70, 50), (205, 200, 190)),
                        ("on a brick wall", "against a brick wall", "in front of a brick wall"),
                        ("a brick wall", "an old brick wall"),
                        ("hang{s} on a brick wall", "{is} painted on a brick wall",
                         "float{s} in front of a brick wall")),
    "water": Background("water", ((55, 115, 180), (125, 185, 230)),
                        ("on rippling water", "on the water", "on a pond"),
                        ("rippling water", "a pond", "a rippled pond"),
                        ("float{s} on rippling water", "drift{s} on a pond", "{is} floating on the water")),
    "clouds": Background("sky", ((95, 150, 215), (165, 200, 240), (245, 245, 248)),
                         ("in a cloudy sky", "among the clouds", "against a cloudy sky"),
                         ("a cloudy sky", "a sky full of clouds"),
                         ("float{s} among the clouds", "drift{s} across a cloudy sky", "{is} flying in a cloudy sky")),
    "tiles": Background("floor", ((226, 221, 206), (150, 148, 140)),
                        ("on a tiled floor", "on tiles", "on a tiled wall"),
                        ("a tiled floor", "a tiled wall"),
                        ("sit{s} on a tiled floor", "{is} lying on tiles", "{is} painted on a tiled wall")),
    "dots": Background("pattern", ((241, 237, 225), (246, 190, 200), (190, 215, 245), (200, 235, 200),
                                   (250, 225, 170)),
                       ("on a polka dot background", "on a dotted background", "on spotted paper"),
                       ("a polka dot background", "dotted paper"),
                       ("stand{s} out on a polka dot background", "{is} drawn on dotted paper",
                        "{is} printed on a polka dot pattern")),
}


def usable_colours(background: str) -> list[str]:
    """The object colours that stand out from a background's own colours."""
    palette = np.array(BACKGROUNDS[background].palette, dtype=np.float64)
    return [name for name, rgb in COLOURS.items()
            if np.linalg.norm(palette - np.array(rgb), axis=1).min() >= MIN_CONTRAST]


def plural(noun: str) -> str:
    """The plural captions write: fish stay fish."""
    return noun if noun.endswith("fish") else noun + "s"


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ------------------------------------------------------------------------------------------------------ outlines


def _arc(radius: float, start: float, stop: float, points: int, centre=(0.0, 0.0)) -> np.ndarray:
    angles = np.linspace(start, stop, points)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 44, endpoint=False)
    return np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))],
                    axis=1)


def _ring() -> np.ndarray:
    """A keyhole polygon: the outer circle, a zero-width cut, the inner circle backwards. Even-odd filling (Pillow's
    and pycocotools') leaves the hole empty, so one COCO polygon holds a ring."""
    outer = _arc(0.5, 0, 2 * np.pi, 41)
    inner = _arc(0.27, 2 * np.pi, 0, 33)
    return np.concatenate([outer, inner])


def _moon() -> np.ndarray:
    """A disc of radius 0.5 less a disc of radius 0.42 whose centre is 0.22 to the right."""
    offset, cut = 0.22, 0.42
    x = (0.25 - cut ** 2 + offset ** 2) / (2 * offset)  # where the two circles cross
    outer_angle = np.arctan2(np.sqrt(0.25 - x * x), x)
    inner_angle = np.arctan2(np.sqrt(0.25 - x * x), x - offset)
    outer = _arc(0.5, outer_angle, 2 * np.pi - outer_angle, 30)
    inner = _arc(cut, -inner_angle, -(2 * np.pi - inner_angle), 24, centre=(offset, 0.0))
    return np.concatenate([outer, inner[1:-1]])


def _fish() -> np.ndarray:
    """Facing right: an oval body and a forked tail."""
    angles = np.linspace(-5 * np.pi / 6, 5 * np.pi / 6, 26)
    body = np.stack([0.12 + 0.38 * np.cos(angles), 0.22 * np.sin(angles)], axis=1)
    tail = np.array([[-0.5, 0.3], [-0.4, 0.0], [-0.5, -0.3]])
    return np.concatenate([body, tail])


# Outlines in image coordinates (y down), before being centred and scaled to an extent of 1.
_OUTLINES = {
    "heart": _heart(),
    "arrow": np.array([[-0.5, -0.12], [0.1, -0.12], [0.1, -0.32], [0.5, 0.0], [0.1, 0.32], [0.1, 0.12],
                       [-0.5, 0.12]]),  # pointing right
    "ring": _ring(),
    "moon": _moon(),
    "house": np.array([[-0.4, 0.5], [0.4, 0.5], [0.4, -0.05], [0.5, -0.05], [0.34, -0.194], [0.34, -0.42],
                       [0.22, -0.42], [0.22, -0.302], [0.0, -0.5], [-0.5, -0.05], [-0.4, -0.05]]),
    "tree": np.array([[-0.08, 0.5], [0.08, 0.5], [0.08, 0.32], [0.4, 0.32], [0.16, 0.05], [0.32, 0.05], [0.1, -0.2],
                      [0.24, -0.2], [0.0, -0.5], [-0.24, -0.2], [-0.1, -0.2], [-0.32, 0.05], [-0.16, 0.05],
                      [-0.4, 0.32], [-0.08, 0.32]]),
    "fish": _fish(),
    "bolt": np.array([[-0.05, -0.5], [0.3, -0.5], [0.08, -0.1], [0.3, -0.1], [-0.2, 0.5], [-0.02, 0.05],
                      [-0.25, 0.05]]),
}
# Which way an object may face, and the tilt (degrees) it may be drawn with; arrows stay square to the image so
# that "pointing up" stays true.
_FACINGS = {"arrow": ("up", "down", "left", "right"), "fish": ("left", "right"), "moon": ("left", "right")}
_TILTS = {"heart": 10, "arrow": 0, "ring": 0, "moon": 25, "house": 6, "tree": 5, "fish": 10, "bolt": 12}
_TURNS = {"right": 0, "down": 90, "left": 180, "up": 270}  # degrees clockwise from the outline's right


def outline(kind: str, facing: str | None, tilt: float, size: float, centre: tuple[float, float]) -> np.ndarray:
    """(points, 2) pixels of one object: its outline faced and tilted, its larger extent size, its box centred."""
    points = _OUTLINES[kind].copy()
    if kind in ("fish", "moon") and facing == "left":
        points[:, 0] = -points[:, 0]
    angle = np.radians(tilt + (_TURNS[facing] if kind == "arrow" else 0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    low, high = points.min(axis=0), points.max(axis=0)
    points = (points - (low + high) / 2) / (high - low).max() * size
    return points + np.array(centre)


def box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a polygon."""
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


# -------------------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True, eq=False)  # compared by identity: a scene may hold two groups alike but for their places
class Group:
    """Objects of one category, as captions name them together; a cluster is annotated as one crowd."""

    colour: str
    kind: str
    members: tuple[np.ndarray, ...]  # each member's polygon, (points, 2) pixels
    cluster: bool
    facing: str | None
    size_word: str | None  # "small", "big" or None; "tiny" for a cluster

    @property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        """What relations are judged on: each member's box, or the whole cluster's box."""
        boxes = [box_of(points) for points in self.members]
        if self.cluster:
            return [(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                     max(b[3] for b in boxes))]
        return boxes

    @property
    def singular(self) -> bool:
        """Whether captions name it as one thing ("a gold heart", "a cluster of ...")."""
        return self.cluster or len(self.members) == 1


@dataclass(frozen=True, eq=False)
class Scene:
    width: int
    height: int
    background: str
    groups: tuple[Group, ...]


def _image_size(rng: np.random.Generator, side: int) -> tuple[int, int]:
    """(width, height): the shorter side about side, the aspect ratio log-uniform over ASPECT_RANGE (kept inside it
    after rounding)."""
    aspect = float(np.exp(rng.uniform(*np.log(ASPECT_RANGE))))
    short = int(round(side * rng.uniform(0.85, 1.15)))
    if aspect >= 1:
        return min(int(round(short * aspect)), int(short * ASPECT_RANGE[1])), short
    return short, min(int(round(short / aspect)), int(short / ASPECT_RANGE[0]))


def _group_sizes(rng: np.random.Generator, objects: int) -> list[int]:
    sizes = []
    while objects > 0:
        size = min(objects, 1 + int(rng.choice(5, p=GROUP_SIZE_WEIGHTS)))
        sizes.append(size)
        objects -= size
    return sizes


def _place_cluster(rng, kind, facing, width, height, short, taken) -> list[np.ndarray] | None:
    """5 to 9 tiny objects packed on a jittered hexagonal grid, in a spot clear of the boxes taken."""
    size = max(9.0, short * rng.uniform(0.07, 0.09))
    step = size * 1.3
    grid = np.array([(column + 0.5 * (row % 2), row * 0.866) for row in range(-3, 4) for column in range(-3, 4)])
    nearest = grid[np.argsort(np.hypot(*grid.T) + rng.uniform(0, 0.3, len(grid)))[:int(rng.integers(5, 10))]]
    offsets = nearest * step + rng.uniform(-0.08, 0.08, nearest.shape) * size
    tilt = rng.uniform(-1, 1) * _TILTS[kind]
    reach = np.abs(offsets).max(axis=0) + size / 2 + 1  # from the cluster's centre to its farthest edge, x and y
    if np.any(2 * reach >= (width, height)):
        return None
    for _ in range(100):
        centre = rng.uniform(reach, (width - reach[0], height - reach[1]))
        members = [outline(kind, facing, tilt, size, centre + offset) for offset in offsets]
        boxes = [box_of(points) for points in members]
        whole = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        if whole[0] >= 1 and whole[1] >= 1 and whole[2] <= width - 1 and whole[3] <= height - 1 \
                and all(_apart(whole, box, 0.04 * short) for box in taken):
            taken.append(whole)
            return members
    return None


def _place_group(rng, kind, facing, count, size, width, height, short, taken) -> list[np.ndarray] | None:
    """count objects of one size anywhere in the image, apart from each other and from the boxes taken."""
    members = []
    for _ in range(count):
        for _ in range(100):
            tilt = rng.uniform(-1, 1) * _TILTS[kind]
            centre = rng.uniform((size / 2 + 2, size / 2 + 2), (width - size / 2 - 2, height - size / 2 - 2))
            points = outline(kind, facing, tilt, size, centre)
            box = box_of(points)
            if all(_apart(box, other, 0.04 * short) for other in taken):
                taken.append(box)
                members.append(points)
                break
        else:
            return None
    return members


def sample_scene(rng: np.random.Generator, side: int) -> Scene:
    """A random scene: one to five objects in groups of distinct categories, one group maybe a tight cluster."""
    width, height = _image_size(rng, side)
    short = min(width, height)
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    colours = usable_colours(background)
    objects = 1 + int(rng.choice(5, p=OBJECT_COUNT_WEIGHTS))
    cluster = rng.random() < CLUSTER_PROBABILITY  # the first group, then, is a cluster: one object of the count
    sizes = [1] + _group_sizes(rng, objects - 1) if cluster else _group_sizes(rng, objects)
    pairs = [(colour, kind) for colour in colours for kind in KINDS]
    chosen = [pairs[int(i)] for i in rng.choice(len(pairs), size=len(sizes), replace=False)]
    scale = 1.0
    for _ in range(20):  # rarely, big objects do not fit: every group shrinks a little, and the layout is drawn again
        taken: list[tuple[float, ...]] = []
        groups = []
        for number, ((colour, kind), count) in enumerate(zip(chosen, sizes)):
            facing = _FACINGS[kind][int(rng.integers(len(_FACINGS[kind])))] if kind in _FACINGS else None
            if cluster and number == 0:
                members = _place_cluster(rng, kind, facing, width, height, short, taken)
                size_word = "tiny"
            else:
                fraction = rng.uniform(0.14, 0.32) * scale
                size_word = "small" if fraction < 0.18 else "big" if fraction > 0.27 else None
                members = _place_group(rng, kind, facing, count, fraction * short, width, height, short, taken)
            if members is None:
                break
            groups.append(Group(colour, kind, tuple(members), cluster and number == 0, facing, size_word))
        if len(groups) == len(sizes):
            return Scene(width, height, background, tuple(groups))
        scale *= 0.85
    raise RuntimeError(f"cannot lay out {sizes} objects in a {width}x{height} image")  # --side keeps images big enough


# -------------------------------------------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(height, width) values in [0, 1], smooth over about width / cells pixels."""
    grid = rng.random((cells + 2, cells + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.BILINEAR))


def _mix(low, high, amount: np.ndarray) -> np.ndarray:
    """(height, width, 3) colours from low to high as amount goes from 0 to 1."""
    low, high = np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)
    return low + (high - low) * amount[:, :, None]


def _wood(rng, height, width, palette):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        y, x = x, y  # planks run up and down
    warp = _smooth_noise(rng, height, width, 3) * 30 + 4 * np.sin(x * rng.uniform(0.02, 0.05) + rng.uniform(0, 6))
    grain = (0.5 + 0.5 * np.sin((y + warp) * rng.uniform(0.3, 0.6))) ** 3
    plank = rng.uniform(18, 34)
    grain = np.where((y % plank) < 1.5, 1.0, grain * 0.8)  # the seams between planks
    return _mix(palette[0], palette[1], grain)


def _brick(rng, height, width, palette):
    y, x = np.mgrid[0:height, 0:width]
    brick_h = int(rng.integers(9, 15))
    brick_w = int(brick_h * rng.uniform(2.0, 2.6))
    row = y // brick_h
    shifted = x + (row % 2) * brick_w // 2
    tone = rng.uniform(-18, 18, size=(row.max() + 1, shifted.max() // brick_w + 1)).astype(np.float32)
    pixels = np.array(palette[0], dtype=np.float32) + tone[row, shifted // brick_w][:, :, None]
    mortar = ((y % brick_h) < 2) | ((shifted % brick_w) < 2)
    pixels[mortar] = palette[1]
    return pixels


def _water(rng, height, width, palette):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = np.zeros((height, width), dtype=np.float32)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        waves += np.sin(np.hypot(x - cx, y - cy) * rng.uniform(0.35, 0.7) + rng.uniform(0, 6))
    amount = 0.35 + 0.25 * waves / 3 + 0.4 * _smooth_noise(rng, height, width, 3)
    return _mix(palette[0], palette[1], np.clip(amount, 0, 1))


def _clouds(rng, height, width, palette):
    sky = _mix(palette[0], palette[1], np.linspace(0, 1, height, dtype=np.float32)[:, None].repeat(width, 1))
    fluff = sum(_smooth_noise(rng, height, width, cells) / weight for cells, weight in ((3, 1), (7, 2), (15, 4)))
    cover = np.clip((fluff / 1.75 - rng.uniform(0.45, 0.6)) * 4, 0, 1)
    return sky * (1 - cover[:, :, None]) + np.array(palette[2], dtype=np.float32) * cover[:, :, None]


def _tiles(rng, height, width, palette):
    y, x = np.mgrid[0:height, 0:width]
    tile = int(rng.integers(14, 26))
    tone = rng.uniform(-10, 10, size=(height // tile + 1, width // tile + 1)).astype(np.float32)
    pixels = np.array(palette[0], dtype=np.float32) + tone[y // tile, x // tile][:, :, None]
    pixels[((y % tile) < 2) | ((x % tile) < 2)] = palette[1]
    return pixels


def _dots(rng, height, width, palette):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    step = rng.uniform(11, 19)
    row = np.round(y / (step * 0.866))
    dy = y - row * step * 0.866
    dx = (x - (row % 2) * step / 2 + step / 2) % step - step / 2
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = palette[0]
    pixels[np.hypot(dx, dy) < step * rng.uniform(0.2, 0.3)] = palette[1 + int(rng.integers(len(palette) - 1))]
    return pixels


_TEXTURES: dict[str, Callable] = {"wood": _wood, "brick": _brick, "water": _water, "clouds": _clouds,
                                  "tiles": _tiles, "dots": _dots}


def _coverage(members: Sequence[np.ndarray], x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """(height, width) share of each pixel of the window at (x0, y0) that the polygons cover: drawn by Pillow at
    SUPERSAMPLE times the resolution, then averaged, so that edges blend as a camera's would."""
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for points in members:
        draw.polygon([tuple(point) for point in ((points - (x0, y0)) * SUPERSAMPLE).tolist()], fill=255)
    return np.asarray(canvas.resize((width, height), Image.BOX), dtype=np.float32) / 255


def draw_scene(rng: np.random.Generator, scene: Scene) -> Image.Image:
    """The background texture, each object flat in its colour (a little varied) with smooth edges, then light
    noise over it all."""
    palette = BACKGROUNDS[scene.background].palette
    shift = rng.uniform(-8, 8)  # brightness of the whole texture
    pixels = _TEXTURES[scene.background](rng, scene.height, scene.width, palette) + shift  # (height, width, 3)
    for group in scene.groups:
        fill = np.clip(np.array(COLOURS[group.colour]) + rng.integers(-10, 11, 3), 0, 255).astype(np.float32)
        points = np.concatenate(group.members)
        x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int) + 1, (scene.width, scene.height))
        alpha = _coverage(group.members, x0, y0, x1 - x0, y1 - y0)[:, :, None]
        window = pixels[y0:y1, x0:x1]
        pixels[y0:y1, x0:x1] = window * (1 - alpha) + fill * alpha
    pixels += rng.normal(0, 3, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# -------------------------------------------------------------------------------------------------------- wording

_SIZE_WORDS = {"small": ["small", "little"], "big": ["big", "large"], "tiny": ["tiny", "tiny", "small", "little"]}
_CLUSTER_WORDS = {"fish": ["a school of", "a shoal of"], "tree": ["a clump of", "a grove of"]}
_CLUSTER_DEFAULT = ["a cluster of", "a tight cluster of", "a bunch of", "a heap of", "a huddle of"]
_FACING_WORDS = {"arrow": {way: [f"pointing {way}"] for way in _TURNS},
                 "fish": {way: [f"facing {way}", f"swimming to the {way}"] for way in ("left", "right")}}
# Phrases true for "a <phrase> b", and how "b with a <...>" says the same.
_RELATIONS = {"left": ["to the left of", "left of"], "right": ["to the right of", "right of"],
              "above": ["above", "over"], "below": ["below", "under", "beneath"], "beside": ["next to", "beside"]}
_WITH_IT = {"to the left of": "to {its} left", "left of": "to {its} left", "to the right of": "to {its} right",
            "right of": "to {its} right", "above": "above {it}", "over": "over {it}", "below": "below {it}",
            "under": "under {it}", "beneath": "beneath {it}", "next to": "next to {it}", "beside": "beside {it}"}
_REGIONS = {("top", "left"): ["in the top left corner", "at the upper left"],
            ("top", "middle"): ["at the top", "near the top of the picture"],
            ("top", "right"): ["in the top right corner", "at the upper right"],
            ("middle", "left"): ["on the left", "on the left side"],
            ("middle", "middle"): ["in the middle", "in the center of the picture"],
            ("middle", "right"): ["on the right", "on the right side"],
            ("bottom", "left"): ["in the bottom left corner", "at the lower left"],
            ("bottom", "middle"): ["at the bottom", "near the bottom of the picture"],
            ("bottom", "right"): ["in the bottom right corner", "at the lower right"]}


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def relations(a: Group, b: Group, short: float) -> list[str]:
    """Which of _RELATIONS hold for "a <relation> b", for every member of a against every member of b: clearly
    apart along one axis, and more apart along it than along the other."""
    gap = 0.02 * short
    found = {"left": True, "right": True, "above": True, "below": True, "beside": True}
    for p in a.boxes:
        for q in b.boxes:
            dx, dy = np.subtract(_centre(q), _centre(p))
            found["left"] &= p[2] + gap <= q[0] and abs(dy) <= 0.7 * abs(dx)
            found["right"] &= q[2] + gap <= p[0] and abs(dy) <= 0.7 * abs(dx)
            found["above"] &= p[3] + gap <= q[1] and abs(dx) <= 0.7 * abs(dy)
            found["below"] &= q[3] + gap <= p[1] and abs(dx) <= 0.7 * abs(dy)
            found["beside"] &= (p[2] + gap <= q[0] or q[2] + gap <= p[0]) and abs(dy) <= 0.25 * abs(dx)
    return [name for name, holds in found.items() if holds]


def region(scene: Scene, group: Group) -> tuple[str, str] | None:
    """(row, column) of the picture a group's one box is in, or None when it has several or sits near a border
    between regions."""
    if len(group.boxes) != 1:
        return None
    x, y = _centre(group.boxes[0])
    x, y = x / scene.width, y / scene.height
    column = "left" if x < 0.3 else "right" if x > 0.7 else "middle" if 0.4 <= x <= 0.6 else None
    row = "top" if y < 0.3 else "bottom" if y > 0.7 else "middle" if 0.4 <= y <= 0.6 else None
    return (row, column) if row and column else None


class CaptionWriter:
    """Writes true captions for one scene; every random choice comes from one stream."""

    def __init__(self, rng: np.random.Generator, scene: Scene) -> None:
        self.rng, self.scene = rng, scene
        self.background = BACKGROUNDS[scene.background]
        self.short = min(scene.width, scene.height)

    def pick(self, options: Sequence):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def shuffled(self) -> list[Group]:
        return [self.scene.groups[int(i)] for i in self.rng.permutation(len(self.scene.groups))]

    # Phrases -------------------------------------------------------------------------------------------------

    def phrase(self, group: Group, facing: bool = True) -> str:
        """A group with its count: "a big gold heart", "a pair of navy arrows", "a school of tiny grey fish"."""
        noun = self.pick(NOUNS[group.kind])
        words = group.colour
        if group.size_word and self.chance(0.8 if group.cluster else 0.4):
            words = f"{self.pick(_SIZE_WORDS[group.size_word])} {words}"
        count = len(group.members)
        if group.cluster:
            text = f"{self.pick(_CLUSTER_WORDS.get(group.kind, _CLUSTER_DEFAULT))} {words} {plural(noun)}"
        elif count == 1:
            text = f"a single {words} {noun}" if self.chance(0.08) else with_article(f"{words} {noun}")
        else:
            number = NUMBERS[count]
            if count == 2 and self.chance(0.35):
                number = "a pair of"
            elif count == 3 and self.chance(0.1):
                number = "a trio of"
            text = f"{number} {words} {plural(noun)}"
        if facing and group.kind in _FACING_WORDS and self.chance(0.3):
            text += " " + self.pick(_FACING_WORDS[group.kind][group.facing])
        return text

    def listing(self, groups: Sequence[Group], facing: bool = True) -> str:
        """The groups in the order given: "a gold heart, two navy arrows and a white ring"."""
        phrases = [self.phrase(group, facing) for group in groups]
        if len(phrases) == 1:
            return phrases[0]
        if len(phrases) == 2 and self.chance(0.15):
            return f"{phrases[0]} as well as {phrases[1]}"
        last = ", and " if len(phrases) > 2 and self.chance(0.4) else " and "
        return ", ".join(phrases[:-1]) + last + phrases[-1]

    def place(self) -> str:
        return self.pick(self.background.places)

    def related_pair(self) -> tuple[Group, Group, str] | None:
        """Two groups and a phrase true for "a <phrase> b", or None when no two groups are clearly placed."""
        pairs = [(a, b, name) for a in self.scene.groups for b in self.scene.groups if a is not b
                 for name in relations(a, b, self.short)]
        if not pairs:
            return None
        a, b, name = self.pick(pairs)
        return a, b, self.pick(_RELATIONS[name])

    # Captions that name every object -------------------------------------------------------------------------

    def listed(self) -> str:
        return f"{self.listing(self.shuffled())} {self.place()}"

    def we_see(self) -> str:
        intro = self.pick(["in this picture we see", "in this picture we can see", "here we can see", "we can see",
                           "this picture shows"])
        return f"{intro} {self.listing(self.shuffled())}" + (f" {self.place()}" if self.chance(0.5) else "")

    def there_is(self) -> str:
        listing = self.listing(self.shuffled())
        return f"there {'is' if listing.startswith(('a ', 'an ')) else 'are'} {listing} {self.place()}"

    def predicate(self) -> str:
        groups = self.shuffled()
        singular = len(groups) == 1 and groups[0].singular
        verb = self.pick(self.background.predicates)
        verb = verb.replace("{s}", "s" if singular else "").replace("{is}", "is" if singular else "are")
        return f"{self.listing(groups)} {verb}"

    def background_first(self) -> str:
        return f"{self.pick(self.background.subjects)} with {self.listing(self.shuffled())}"

    def drawing(self) -> str:
        intro = self.pick(["a drawing of", "an illustration of", "a picture of", "a simple drawing of"])
        return f"{intro} {self.listing(self.shuffled())} {self.place()}"

    def related(self) -> str | None:
        """"a navy arrow above a crimson ring", and the other groups after it."""
        found = self.related_pair()
        if found is None:
            return None
        a, b, relation = found
        first, second = self.phrase(a, facing=False), self.phrase(b, facing=False)
        form = self.pick(["plain", "plain", "is", "with"])
        if form == "plain":
            text = f"{first} {relation} {second}"
        elif form == "is":
            text = f"{first} {'is' if a.singular else 'are'} {relation} {second}"
        else:
            it = {"{it}": "it", "{its}": "its"} if b.singular else {"{it}": "them", "{its}": "their"}
            where = _WITH_IT[relation]
            for key, word in it.items():
                where = where.replace(key, word)
            text = f"{second} with {first} {where}"
        rest = [group for group in self.shuffled() if group is not a and group is not b]
        if rest:
            return text + self.pick([", and ", ", plus ", ", along with "]) + self.listing(rest)
        return text + (f" {self.place()}" if self.chance(0.3) else "")

    def left_to_right(self) -> str | None:
        groups = sorted(self.scene.groups, key=lambda group: group.boxes[0][0])
        if len(groups) < 2 or any(len(group.boxes) != 1 for group in groups):
            return None
        if any(a.boxes[0][2] + 0.02 * self.short > b.boxes[0][0] for a, b in zip(groups, groups[1:])):
            return None
        return f"{self.pick(['from left to right', 'left to right'])}{self.pick([':', ','])} {self.listing(groups)}"

    def counted(self) -> str | None:
        if len(self.scene.groups) < 2 or any(group.cluster for group in self.scene.groups):
            return None
        total = sum(len(group.members) for group in self.scene.groups)
        things = self.pick(["objects", "things", "shapes"])
        return f"{NUMBERS[total]} {things} {self.place()}: {self.listing(self.shuffled())}"

    def shared_colour(self) -> str | None:
        """"two crimson shapes: a heart and a ring", when single objects share their colour."""
        groups = self.shuffled()
        if len(groups) < 2 or len({group.colour for group in groups}) > 1 or not all(
                len(group.members) == 1 and not group.cluster for group in groups):
            return None
        kinds = [with_article(group.kind) for group in groups]
        things = self.pick(["shapes", "objects"])
        return f"{NUMBERS[len(groups)]} {groups[0].colour} {things}: {', '.join(kinds[:-1])} and {kinds[-1]}"

    def shared_kind(self) -> str | None:
        """"two hearts, one gold and one navy", then any other groups."""
        groups = self.shuffled()
        singles = [group for group in groups if len(group.members) == 1 and not group.cluster]
        for kind in dict.fromkeys(group.kind for group in singles):
            same = [group for group in singles if group.kind == kind]
            if len(same) < 2 or kind == "fish":  # "fish" reads as one, not as a plural to share out
                continue
            ones = [f"one {group.colour}" for group in same]
            text = f"{NUMBERS[len(same)]} {plural(kind)}, {', '.join(ones[:-1])} and {ones[-1]}"
            rest = [group for group in groups if group not in same]
            return text + (f", and {self.listing(rest)}" if rest else f", {self.place()}")
        return None

    def regions(self) -> str | None:
        """Where in the picture each group is: "a gold heart in the top left corner and a navy arrow at the
        bottom"."""
        groups = self.shuffled()
        places = [region(self.scene, group) for group in groups]
        if len(groups) > 3 or None in places:
            return None
        parts = [f"{self.phrase(group)} {self.pick(_REGIONS[where])}" for group, where in zip(groups, places)]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    # Captions that name some of the objects ------------------------------------------------------------------

    def relation_only(self) -> str | None:
        found = self.related_pair() if len(self.scene.groups) > 2 else None
        if found is None:
            return None
        a, b, relation = found
        return f"{self.phrase(a, facing=False)} {relation} {self.phrase(b, facing=False)}"

    def one_of_them(self) -> str | None:
        """One group and a word for the rest: "a gold heart and some other things on a brick wall"."""
        if len(self.scene.groups) < 2:
            return None
        group = self.pick(self.scene.groups)
        others = sum(99 if other.cluster else len(other.members) for other in self.scene.groups if other is not group)
        if others == 1:
            return f"{self.phrase(group)} and {self.pick(['one other thing', 'something else'])} {self.place()}"
        return self.pick([f"several things {self.place()}, among them {self.phrase(group)}",
                          f"{self.phrase(group)} and {self.pick(['some', 'a few'])} other things {self.place()}"])


# (template, weight, whether it names every object with its count)
_TEMPLATES: list[tuple[Callable[[CaptionWriter], str | None], float, bool]] = [
    (CaptionWriter.listed, 3, True), (CaptionWriter.we_see, 2, True), (CaptionWriter.there_is, 2, True),
    (CaptionWriter.predicate, 3, True), (CaptionWriter.background_first, 1.5, True),
    (CaptionWriter.drawing, 1.5, True), (CaptionWriter.related, 3, True), (CaptionWriter.left_to_right, 2, True),
    (CaptionWriter.counted, 1.5, True), (CaptionWriter.shared_colour, 2, True), (CaptionWriter.shared_kind, 2, True),
    (CaptionWriter.regions, 2, True), (CaptionWriter.relation_only, 2, False), (CaptionWriter.one_of_them, 1, False)]
MIN_COMPLETE = 3  # of an image's five captions, at least this many name every object


def caption_scene(rng: np.random.Generator, scene: Scene, count: int = 5) -> list[str]:
    """count distinct true captions, in random order, at least MIN_COMPLETE of which name every object."""
    writer = CaptionWriter(rng, scene)
    weights = np.array([weight for _, weight, _ in _TEMPLATES])
    captions: list[str] = []
    complete = 0
    for _ in range(500):
        if len(captions) == count:
            break
        need_complete = count - len(captions) <= MIN_COMPLETE - complete
        usable = weights * np.array([full or not need_complete for _, _, full in _TEMPLATES])
        index = int(rng.choice(len(_TEMPLATES), p=usable / usable.sum()))
        template, _, full = _TEMPLATES[index]
        text = template(writer)
        if text is None:  # the scene offers no such caption
            weights[index] = 0.0
            continue
        weights[index] *= 0.3  # favour wordings not yet used for this image
        text = text[0].upper() + text[1:] + ("." if rng.random() < 0.7 else "")
        if text.rstrip(".") not in {caption.rstrip(".") for caption in captions}:
            captions.append(text)
            complete += full
    if len(captions) < count:  # a programming error: the complete templates always offer more wordings
        raise RuntimeError(f"only {len(captions)} distinct captions for {scene}")
    return [captions[int(i)] for i in rng.permutation(count)]


# -------------------------------------------------------------------------------------------------------- writing

_ANNOTATION_FILES = {f"{kind}_{split}.json" for kind in ("captions", "instances", "stuff") for split in SPLITS}
_PARTIAL = ".partial"  # suffix of a file being written


def object_categories() -> list[dict]:
    """{"id": 1, "name": "crimson heart", "supercategory": "heart"}, ...: kind-major, from 1."""
    pairs = [(colour, kind) for kind in KINDS for colour in COLOURS]
    return [{"id": number, "name": f"{colour} {kind}", "supercategory": kind}
            for number, (colour, kind) in enumerate(pairs, start=1)]


def stuff_categories() -> list[dict]:
    """{"id": 92, "name": "wood", "supercategory": "material"}, ..."""
    return [{"id": number, "name": name, "supercategory": background.supercategory}
            for number, (name, background) in enumerate(BACKGROUNDS.items(), start=STUFF_ID_BASE)]


def synonyms_text() -> str:
    """coco_synonyms.txt's format: one category a line, its name first, then the other names captions use."""
    lines = [SYNONYMS_HEADER, "# One object category a line: its name first, then its other names in captions."]
    for kind in KINDS:
        for colour in COLOURS:
            lines.append(", ".join(f"{colour} {noun}" for noun in dict.fromkeys([kind, *NOUNS[kind]])))
    return "\n".join(lines) + "\n"


def _polygon(points: np.ndarray) -> list[float]:
    """COCO's flat [x1, y1, x2, y2, ...], to the hundredth of a pixel."""
    return [round(float(v), 2) for v in points.reshape(-1)]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, as crowd annotations have it: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F")
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(edges).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": ([0] if flat[0] else []) + counts}


def annotate(scene: Scene, image_id: int, first_id: int, category_ids: dict[str, int],
             stuff_ids: dict[str, int]) -> tuple[list[dict], dict]:
    """(instance annotations, stuff annotation) of one image; annotation ids count on from first_id."""
    height, width = scene.height, scene.width
    covered = np.zeros((height, width), dtype=bool)
    instances = []
    for group in scene.groups:
        polygons = [_polygon(points) for points in group.members]
        masks = mask_utils.decode(mask_utils.frPyObjects(polygons, height, width))  # (height, width, members)
        covered |= masks.any(axis=2)
        boxes = [box_of(points) for points in group.members]
        if group.cluster:  # one crowd annotation for all the members
            mask = masks.any(axis=2).astype(np.uint8)
            x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            entries = [(_uncompressed_rle(mask), int(mask.sum()), (x0, y0, x1, y1), 1)]
        else:
            entries = [([polygon], int(masks[:, :, k].sum()), boxes[k], 0) for k, polygon in enumerate(polygons)]
        for segmentation, area, (x0, y0, x1, y1), crowd in entries:
            instances.append({"id": first_id + len(instances), "image_id": image_id,
                              "category_id": category_ids[f"{group.colour} {group.kind}"],
                              "segmentation": segmentation, "area": float(area),
                              "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                              "iscrowd": crowd})
    rle = mask_utils.encode(np.asfortranarray((~covered).astype(np.uint8)))
    stuff = {"id": image_id, "image_id": image_id, "category_id": stuff_ids[scene.background],
             "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
             "area": float((~covered).sum()), "bbox": [0.0, 0.0, float(width), float(height)], "iscrowd": 0}
    return instances, stuff


def _write_text(path: Path, text: str) -> None:
    """Write beside the target, then rename: a reader sees the old file or the whole new one."""
    partial = path.with_name(path.name + _PARTIAL)
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_ours(path: Path) -> bool:
    """Whether a file in the annotations folder was written by this tool (or is one it was writing)."""
    name = path.name[:-len(_PARTIAL)] if path.name.endswith(_PARTIAL) else path.name
    if name != path.name:
        return name in _ANNOTATION_FILES or name == "synonyms.txt"
    try:
        with open(path, encoding="utf-8") as handle:
            if name == "synonyms.txt":
                return handle.readline().rstrip("\n") == SYNONYMS_HEADER
            if name not in _ANNOTATION_FILES:
                return False
            info = json.load(handle).get("info")
    except (OSError, ValueError, AttributeError):  # a folder, unreadable, not text, not JSON, not a JSON object
        return False
    return isinstance(info, dict) and info.get("contributor") == CONTRIBUTOR


def _listed_images(captions_file: Path) -> set[str]:
    """The image files an earlier run of this tool listed for a split."""
    try:
        return {image["file_name"] for image in json.loads(captions_file.read_text(encoding="utf-8"))["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def write_split(out_dir: Path, split: str, count: int, seed: int, side: int, verbose: bool = False) -> Path:
    """One split's images, then its instances, stuff and captions files (the captions last: the mark of a complete
    split); returns the captions file."""
    annotations, image_dir = out_dir / "annotations", out_dir / "images" / split
    files = {kind: annotations / f"{kind}_{split}.json" for kind in ("instances", "stuff", "captions")}
    earlier = _listed_images(files["captions"])
    for path in reversed(files.values()):  # no annotation file may vouch for a half-rewritten image folder
        path.unlink(missing_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    category_ids = {category["name"]: category["id"] for category in object_categories()}
    stuff_ids = {category["name"]: category["id"] for category in stuff_categories()}
    stream = SPLITS.index(split)
    images, instances, stuff, captions = [], [], [], []
    for index in tqdm(range(1, count + 1), desc=f"other {split}", disable=not verbose, leave=False):
        # One random stream per image: image i is the same whatever the size of its split or of the others.
        rng = np.random.default_rng([seed, stream, index])
        scene = sample_scene(rng, side)
        image_id = (stream + 1) * ID_STRIDE + index
        file_name = f"{split}_{index:07d}.jpg"
        # Full-resolution colour (4:4:4): at the default 4:2:0 a cluster's tiny members lose much of their colour.
        draw_scene(rng, scene).save(image_dir / file_name, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height})
        objects, background = annotate(scene, image_id, len(instances) + 1, category_ids, stuff_ids)
        instances += objects
        stuff.append(background)
        captions += [{"id": len(captions) + number, "image_id": image_id, "caption": text}
                     for number, text in enumerate(caption_scene(rng, scene), start=1)]
    for name in earlier - {image["file_name"] for image in images}:  # left by an earlier, larger run
        (image_dir / name).unlink(missing_ok=True)
    info = {"description": "Independent synthetic set: coloured objects on textures, five true captions per image",
            "version": str(VERSION), "contributor": CONTRIBUTOR,
            "parameters": {"split": split, "count": count, "seed": seed, "side": side, "jpeg_quality": JPEG_QUALITY,
                           "jpeg_subsampling": "4:4:4"}}
    head = {"info": info, "licenses": [], "images": images}
    _write_text(files["instances"], json.dumps({**head, "annotations": instances, "categories": object_categories()}))
    _write_text(files["stuff"], json.dumps({**head, "annotations": stuff, "categories": stuff_categories()}))
    _write_text(files["captions"], json.dumps({**head, "annotations": captions}))
    return files["captions"]


def generate(out_dir: str | os.PathLike, train: int = 3000, val: int = 500, test: int = 500, seed: int = 0,
             side: int = 128, synonyms: bool = True, verbose: bool = False) -> dict[str, Path]:
    """Write the set under out_dir (see the module's docstring); returns split -> captions file. ValueError, before
    anything is written, when out_dir/annotations holds a file this tool did not write or side is below MIN_SIDE."""
    if side < MIN_SIDE:
        raise ValueError(f"side must be at least {MIN_SIDE} pixels, got {side}")
    out_dir = Path(out_dir)
    annotations = out_dir / "annotations"
    if annotations.is_dir():
        foreign = [path for path in sorted(annotations.iterdir()) if not is_ours(path)]
        if foreign:
            raise ValueError(f"{foreign[0]} was not written by {CONTRIBUTOR}, so it is not replaced: give another "
                             f"--out folder")
    annotations.mkdir(parents=True, exist_ok=True)
    synonyms_file = annotations / "synonyms.txt"
    if synonyms:
        _write_text(synonyms_file, synonyms_text())
    else:  # an earlier run's list would otherwise still be read
        synonyms_file.unlink(missing_ok=True)
    written = {}
    for split, count in zip(SPLITS, (train, val, test)):
        start = time.perf_counter()
        written[split] = write_split(out_dir, split, count, seed, side, verbose)
        if verbose:
            print(f"{split}: {count} images, {5 * count} captions -> {written[split]} "
                  f"({time.perf_counter() - start:.1f} s)")
    return written


# --------------------------------------------------------------------------------------------------- command line


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, write the set, print one line per split; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The same arguments give byte-identical files.")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write (annotations/, images/)")
    count = _whole_number(0, ID_STRIDE - 1)
    parser.add_argument("--train", type=count, default=3000, help="number of training images")
    parser.add_argument("--val", type=count, default=500, help="number of validation images")
    parser.add_argument("--test", type=count, default=500, help="number of test images")
    parser.add_argument("--seed", type=_whole_number(0, 2**63 - 1), default=0, help="random seed")
    parser.add_argument("--side", type=_whole_number(MIN_SIDE, 2048), default=128,
                        help="about the shorter image side in pixels (each image 0.85 to 1.15 times it); the "
                             "aspect ratio varies from 0.6 to 1.8")
    parser.add_argument("--no-synonyms", dest="synonyms", action="store_false",
                        help="write no synonyms.txt, so that object scores read the category names alone")
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.train, args.val, args.test, args.seed, args.side, args.synonyms, verbose=True)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write under {args.out} ({error.strerror or error}): choose a writable --out folder",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
