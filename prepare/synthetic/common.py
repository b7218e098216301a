"""What both synthetic varieties share: the palette, the shapes and how they are drawn, the caption wording
machinery, and the writer of a set's files (images, COCO captions, instances and stuff, synonyms).

easy.py and hard.py (the two varieties) build on this module; it imports neither, and the front that picks a variety
(__init__.py, which `prepare_data.py synthetic` runs) hands one to the writer. The writer takes a Variety: a variety's drawing, labelling and
captioning functions and its names.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageDraw
from pycocotools import mask as mask_utils

from captioning.annotations import annotation_path
from captioning.files import atomic_write, write_json_atomic
from captioning.progress import progress

SPLITS = ("train", "val", "test")
# Each split draws from its own random streams, and its image ids start at a fixed base, so that changing the
# size of one split changes nothing in the others.
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
_ID_BASES = {"train": 0, "val": 1_000_000, "test": 2_000_000}
MAX_IMAGES_PER_SPLIT = 999_999
MIN_SIDE, MAX_SIDE = 32, 4096
JPEG_QUALITY = 90

# Object colours, clearly distinct under JPEG and at 64 pixels, and all far from the light backgrounds. Ten colours
# and six shapes make sixty kinds of object, so that a constant caption rarely names the right one.
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
# The easy set's backgrounds; the hard set's stripes and checkerboards take their light tone from them.
BACKGROUNDS = {
    "white": (246, 246, 244),
    "gray": (190, 190, 190),
    "beige": (232, 216, 182),
    "light blue": (190, 214, 240),
    "light green": (206, 234, 200),
    "pink": (246, 212, 222),
}
# The easy set's shapes; the hard set adds one.
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
# A relation is stated only when the centres are this far apart (fraction of the side); "next to" also needs the
# centres aligned within ALIGNED on the other axis.
CLEAR = 0.20
ALIGNED = 0.12


# ----------------------------------------------------------------------------------------------------- shapes


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


def unit_outline(shape: str) -> np.ndarray:
    """Unit polygon of a shape, shifted so that its box is centred on the origin; (points, 2)."""
    if shape == "circle":
        return np.array([[-0.5, -0.5], [0.5, 0.5]])  # the box corners stand in for the ellipse
    points = _OUTLINES[shape]
    return points - (points.min(axis=0) + points.max(axis=0)) / 2


def boxes_apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    """Whether two boxes are separated by at least gap pixels along x or along y."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


def fitted_outline(unit: np.ndarray, bbox: Sequence[float]) -> list[tuple[float, float]]:
    """A unit polygon stretched to fill a box (x, y, width, height) exactly: the points a shape is drawn with."""
    x, y, w, h = bbox
    low, high = unit.min(axis=0), unit.max(axis=0)
    points = (unit - low) / (high - low) * np.array([w, h]) + np.array([x, y])
    return [tuple(p) for p in points.tolist()]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox: Sequence[float],
               unit_of: Callable[[str], np.ndarray] = unit_outline, **style) -> None:
    """Draw one shape filling its box (x, y, width, height): an ellipse for a circle, else the shape's unit polygon
    (unit_of(shape)) stretched to the box. style goes to Pillow's ellipse and polygon (fill, outline, width)."""
    x, y, w, h = bbox
    if shape == "circle":
        draw.ellipse([x, y, x + w, y + h], **style)
    else:
        draw.polygon(fitted_outline(unit_of(shape), bbox), **style)


# --------------------------------------------------------------------------------------------------- wording


def plural_of(noun: str) -> str:
    """The plural the captions use for a shape noun."""
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def with_article(phrase: str) -> str:
    """The phrase with "a" or "an" before it."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def relation_families(a: Shape, b: Shape, width: float, height: float) -> list[list[str]]:
    """Groups of synonymous phrases, each true for "a <phrase> b" from the centres of their boxes, with distances
    measured as fractions of width and height."""
    dx = (b.centre[0] - a.centre[0]) / width
    dy = (b.centre[1] - a.centre[1]) / height  # image y grows downwards
    families = []
    if dx >= CLEAR:
        families.append(["to the left of"])
    if dx <= -CLEAR:
        families.append(["to the right of"])
    if dy >= CLEAR:
        families.append(["above", "above", "over"])
    if dy <= -CLEAR:
        families.append(["below", "below", "under", "beneath"])
    if abs(dx) >= CLEAR and abs(dy) <= ALIGNED:
        families.append(["next to", "beside"])
    return families


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

# Every file records the generator as its contributor: a rerun replaces only such files. The name is the module the
# generator was before the package layout, kept so that the sets it wrote are still known as the generator's own.
_CONTRIBUTOR = "synthetic_data.py"
# The first line of the synonyms file: it says who wrote the file, so that a rerun knows it may replace it.
_SYNONYMS_HEADER = f"# Written by {_CONTRIBUTOR}: the words its captions name each object category with."
_BACKGROUND_ID_BASE = 101  # stuff categories (backgrounds) start here, clear of the object categories


@dataclass(frozen=True)
class Variety:
    """What the writer needs from a variety of the set: its drawing and captioning, and its names."""

    name: str  # "easy", "hard"
    sample: Callable  # (rng, width, height) -> scene
    draw: Callable  # (rng, scene) -> image
    label: Callable  # scene -> (height, width) uint8: 0 for the background, k for the k-th object drawn
    describe: Callable  # (rng, scene) -> captions
    version: int
    description: str
    shapes: tuple[str, ...]
    backgrounds: tuple[str, ...]
    nouns: dict[str, list[str]]  # shape -> the singular nouns captions name it with


def _file_name(split: str, index: int) -> str:
    return f"synthetic_{split}_{index:06d}.jpg"


def _parameters(split: str, count: int, seed: int, width: int, height: int, variety: Variety) -> dict:
    """What a split's files record of the run that wrote them; a rerun with other parameters rewrites the split."""
    parameters = {"split": split, "count": count, "seed": seed, "width": width, "height": height,
                  "variety": variety.name, "generator_version": variety.version, "jpeg_quality": JPEG_QUALITY}
    if variety.name == "easy":  # recorded as before varieties existed
        del parameters["variety"]
    return parameters


def _split_files(out_dir: Path, split: str) -> dict[str, Path]:
    """A split's annotation files, in the order they are written: the captions file last, as the mark of a
    complete split."""
    folder = annotation_path(out_dir, split).parent
    return {"instances": folder / f"instances_{split}.json", "stuff": folder / f"stuff_{split}.json",
            "captions": annotation_path(out_dir, split)}


def _synonyms_file(out_dir: Path) -> Path:
    return annotation_path(out_dir, "train").parent / "synonyms.txt"


def _pair_ids(variety: Variety) -> dict[tuple[str, str], int]:
    """Category id of every colour-shape pair, colour-major from 1: ("red", "circle") -> 1, ("red", "square") -> 2."""
    pairs = [(colour, shape) for colour in COLOURS for shape in variety.shapes]
    return {pair: number for number, pair in enumerate(pairs, start=1)}


def _object_categories(variety: Variety) -> list[dict]:
    """COCO categories of every colour-shape pair: {"id": 1, "name": "red circle", "supercategory": "circle"}, ..."""
    return [{"id": number, "name": f"{colour} {shape}", "supercategory": shape}
            for (colour, shape), number in _pair_ids(variety).items()]


def _background_categories(variety: Variety) -> list[dict]:
    """COCO-Stuff categories of every background, from _BACKGROUND_ID_BASE: 101 "white", ..."""
    return [{"id": number, "name": background, "supercategory": "background"}
            for number, background in enumerate(variety.backgrounds, start=_BACKGROUND_ID_BASE)]


def _synonyms_text(variety: Variety) -> str:
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


def _write_synonyms(out_dir: Path, variety: Variety) -> None:
    """Write the synonyms file, unless it already says the same (a rerun leaves complete files untouched)."""
    path = _synonyms_file(out_dir)
    text = _synonyms_text(variety)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _generate_split(out_dir: Path, split: str, count: int, seed: int, width: int, height: int,
                    verbose: bool, variety: Variety) -> tuple[Path, bool]:
    """Write one split's images, then its instances, stuff and captions files; returns (captions file, whether it
    was written)."""
    files = _split_files(out_dir, split)
    image_dir = out_dir / "images" / split
    parameters = _parameters(split, count, seed, width, height, variety)
    if _is_complete(files, image_dir, parameters):
        return files["captions"], False
    # Removed first: if this run is interrupted, no annotation file may vouch for a half-rewritten image folder.
    for path in reversed(files.values()):
        path.unlink(missing_ok=True)
    files["captions"].parent.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    object_categories, background_categories = _object_categories(variety), _background_categories(variety)
    pair_ids = _pair_ids(variety)
    background_ids = {category["name"]: category["id"] for category in background_categories}
    images, instances, stuff, captions = [], [], [], []
    for index in progress(range(1, count + 1), desc=f"synthetic {split}", disable=not verbose, leave=False,
                          summary=False):  # the split's line follows
        # One stream per image: image i is the same whatever the split size, and splits never share a stream.
        rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
        scene = variety.sample(rng, width, height)
        file_name = _file_name(split, index)
        variety.draw(rng, scene).save(image_dir / file_name, "JPEG", quality=JPEG_QUALITY)
        image_id = _ID_BASES[split] + index
        images.append({"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height})
        objects, background = _annotate(image_id, scene, variety.label(scene), pair_ids, background_ids)
        instances += objects
        stuff.append(background)
        for number, caption in enumerate(variety.describe(rng, scene), start=1):
            captions.append({"id": image_id * 10 + number, "image_id": image_id, "caption": caption})
    # Images left from an earlier, larger run of this split would otherwise linger unlisted.
    wanted = {image["file_name"] for image in images}
    for stale in image_dir.glob(f"synthetic_{split}_*.jpg"):
        if stale.name not in wanted:
            stale.unlink()
    info = {"description": variety.description, "version": str(variety.version), "contributor": _CONTRIBUTOR,
            "parameters": parameters}
    write_json_atomic(files["instances"], {"info": info, "licenses": [], "images": images, "annotations": instances,
                                           "categories": object_categories})
    write_json_atomic(files["stuff"], {"info": info, "licenses": [], "images": images, "annotations": stuff,
                                       "categories": background_categories})
    write_json_atomic(files["captions"], {"info": info, "licenses": [], "images": images, "annotations": captions})
    return files["captions"], True




def write_set(out_dir: Path, counts: Sequence[int], seed: int, width: int, height: int, verbose: bool,
              variety: Variety) -> dict[str, Path]:
    """Write a set of this variety under out_dir, counts[i] images in SPLITS[i], skipping splits already complete
    (the arguments checked by the caller); returns split -> captions file."""
    ours = [path for split in SPLITS for path in _split_files(out_dir, split).values()] + [_synonyms_file(out_dir)]
    for theirs in ours:  # all checked before anything is written
        if not _written_by_us(theirs):
            raise ValueError(f"{theirs} exists and was not written by the synthetic generator, so it is not "
                             f"replaced: give another output folder")
    _write_synonyms(out_dir, variety)
    paths = {}
    for split, count in zip(SPLITS, counts):
        start = time.perf_counter()
        paths[split], written = _generate_split(out_dir, split, count, seed, width, height, verbose, variety)
        if verbose:
            status = f"written in {time.perf_counter() - start:.1f} s" if written else \
                "already complete with these parameters, nothing done"
            sides = f"{width}x{height}" if variety.name == "easy" else f"about {width}x{height}, {variety.name}"
            print(f"{split}: {count} images {sides}, {5 * count} captions -> {paths[split]} ({status})")
    return paths
