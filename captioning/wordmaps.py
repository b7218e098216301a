"""Word maps: where in the image each generated word comes from (Grad-CAM for captions), and the pointing game
that checks them against the boxes of a set's instance annotations (instances_<split>.json).

Grad-CAM (Selvaraju et al. 2017): the gradient of a word's log-probability with respect to the CNN's last
convolutional feature map, averaged over space, weighs that map's channels; the ReLU of the weighted sum is the
word's map. Our encoder pools the feature map globally, so each word needs a backward pass through the decoder and
the pooling only, not through the CNN. The pointing game (Zhang et al. 2016): a map "points" at its maximum; the
noun of a phrase that names an object category (objects.py: "red circle", "dog") scores a hit when that point lies
inside a box of that category in the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Iterator

import torch
import torch.nn.functional as F

from captioning import objects
from captioning.annotations import annotation_path, load_coco, load_instances, object_files
from data_loader import Preprocess, get_loader
from captioning.inference import Captioner
from model import DecoderRNN, EncoderCNN
from captioning.progress import progress as progress_bar


@dataclass
class WordMaps:
    """One image's generated caption with a heat map per word."""

    image: torch.Tensor  # (3, H, W) the preprocessed image, as the CNN saw it (normalised)
    words: list[str]  # the generated tokens up to <end>, punctuation included
    cells: torch.Tensor  # (words, h, w) Grad-CAM at the feature map's resolution, unscaled
    caption: str  # the clean sentence, as caption.py prints it

    @property
    def maps(self) -> torch.Tensor:
        """(words, H, W): the cells upsampled to the image and scaled to [0, 1] per word (a zero map stays zero)."""
        maps = F.interpolate(self.cells.unsqueeze(0), size=self.image.shape[-2:], mode="bilinear",
                             align_corners=False)[0]  # (words, H, W)
        return maps / maps.flatten(1).amax(-1).clamp(min=1e-12)[:, None, None]


def grad_cam(encoder: EncoderCNN, decoder: DecoderRNN, feature_maps: torch.Tensor, ids: torch.Tensor,
             rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of chosen generated words: (batch, C, h, w) feature maps, (batch, T) word ids, and per map wanted
    the row and position of its word, both (maps,) -> (maps, h, w).

    Teacher-forced on the generated words, in fp32 whatever precision the CNN ran in: autocast's bf16 would round
    the small gradients that weigh the channels.
    """
    # One copy of the feature map per word wanted, so that a single backward pass gives each its own gradient;
    # each copy runs the decoder only as far as its word (packed), so a caption of T words costs about T^2/2 steps.
    activations = feature_maps.detach().float()[rows].requires_grad_(True)  # (maps, C, h, w)
    words = ids[rows]  # (maps, T)
    with torch.enable_grad():
        features = encoder.project(encoder.pool(activations))  # (maps, embed)
        captions = torch.cat([torch.full_like(words[:, :1], decoder.start_index), words], dim=1)  # (maps, T + 1)
        # Output k predicts captions[:, k], so the word at position p is output p + 1, which needs p + 2 inputs.
        scores = decoder(features, captions, positions + 2)  # (maps, T + 1, vocab)
        index = torch.arange(len(rows), device=ids.device)
        chosen = scores[index, positions + 1].log_softmax(-1)[index, words[index, positions]]  # (maps,)
        gradient, = torch.autograd.grad(chosen.sum(), activations)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (maps, C, 1, 1): the gradient averaged over space
    return F.relu((weights * activations.detach()).sum(dim=1))  # (maps, h, w)


def word_maps(captioner: Captioner, images: torch.Tensor, beam_size: int = 1, max_len: int | None = None,
              only: Collection[str] | None = None) -> list[WordMaps]:
    """Caption a batch of preprocessed images (batch, 3, H, W) and return each caption's per-word maps (with only:
    maps of these words alone, which is much cheaper; the other words keep a map of zeros)."""
    feature_maps = captioner.feature_maps(images)  # one CNN pass for the caption and its maps
    ids = captioner.decode_feature_maps(feature_maps, beam_size, max_len)  # (batch, T), <end> then <pad>
    vocab = captioner.vocab
    kept = [[position for position in range(_length(row, vocab.end_index))
             if row[position] not in (vocab.start_index, vocab.pad_index)] for row in ids.tolist()]
    wanted = [[index for index, position in enumerate(positions)
               if only is None or vocab.idx2word[row[position]] in only] for row, positions in zip(ids.tolist(), kept)]
    rows = torch.tensor([row for row, chosen in enumerate(wanted) for _ in chosen], dtype=torch.long)
    positions = torch.tensor([kept[row][index] for row, chosen in enumerate(wanted) for index in chosen],
                             dtype=torch.long)
    cells = torch.zeros(0, *feature_maps.shape[-2:])
    if len(rows):
        cells = grad_cam(captioner.encoder, captioner.decoder, feature_maps, ids, rows.to(ids.device),
                         positions.to(ids.device)).cpu()  # (maps, h, w)
    results, start = [], 0
    for image, row, positions, chosen in zip(images.cpu(), ids.tolist(), kept, wanted):
        maps = torch.zeros(len(positions), *feature_maps.shape[-2:])  # (words, h, w)
        maps[chosen] = cells[start:start + len(chosen)]
        results.append(WordMaps(image, [vocab.idx2word[row[position]] for position in positions], maps,
                                vocab.clean_sentence(row)))
        start += len(chosen)
    return results


def _length(row: list[int], end_index: int) -> int:
    """Positions before the first <end> (all of them without one)."""
    return row.index(end_index) if end_index in row else len(row)


def word_maps_files(captioner: Captioner, paths: Iterable[str | Path], beam_size: int = 1, batch_size: int = 16
                    ) -> Iterator[tuple[str, WordMaps | None, str | None]]:
    """(path, word maps, None) per readable image file, (path, None, reason) per unreadable one, in order."""
    return captioner.map_files(paths, lambda images: word_maps(captioner, images, beam_size), batch_size)


# ---------------------------------------------------------------------------------------------- pointing game

def peak_point(cells: torch.Tensor, image_size: int) -> tuple[float, float] | None:
    """Where a (h, w) map points, in the crop's pixels: the centre of its strongest cell (which is where the
    bilinear upsampling peaks); None for a map that is zero everywhere."""
    if not cells.max() > 0:
        return None
    height, width = cells.shape
    row, column = divmod(int(cells.argmax()), width)
    return (column + 0.5) * image_size / width, (row + 0.5) * image_size / height


def union_area(boxes: list[tuple[float, float, float, float]], window: tuple[float, float, float, float]) -> float:
    """Area of the union of (x, y, w, h) boxes inside the window (x0, y0, x1, y1), exactly, by cutting the plane
    along every box edge."""
    x0, y0, x1, y1 = window
    clipped = [(max(x, x0), max(y, y0), min(x + w, x1), min(y + h, y1)) for x, y, w, h in boxes]
    clipped = [box for box in clipped if box[0] < box[2] and box[1] < box[3]]
    xs = sorted({edge for box in clipped for edge in (box[0], box[2])})
    ys = sorted({edge for box in clipped for edge in (box[1], box[3])})
    area = 0.0
    for left, right in zip(xs, xs[1:]):
        for top, bottom in zip(ys, ys[1:]):
            x, y = (left + right) / 2, (top + bottom) / 2
            if any(a <= x <= c and b <= y <= d for a, b, c, d in clipped):
                area += (right - left) * (bottom - top)
    return area


def point_at(cells: torch.Tensor, boxes: list[tuple[float, float, float, float]], width: int, height: int,
             transform: Preprocess) -> tuple[bool, float]:
    """(hit, random rate) of one word's (h, w) map against the (x, y, w, h) boxes of the category it names, in the
    original image's pixels, the map mapped back through the preprocessing (transform). The random rate is the
    chance that a point drawn uniformly over what the CNN saw lands in one of the boxes."""
    window = transform.window(width, height)
    random_rate = union_area(boxes, window) / ((window[2] - window[0]) * (window[3] - window[1]))
    point = peak_point(cells, transform.image_size)
    if point is None:
        return False, random_rate
    x, y = transform.source(*point, width, height)
    return any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes), random_rate


class InstanceBoxes:
    """The boxes of a split's instance annotations by image and category name, the categories' supercategories,
    and the vocabulary that names them (objects.py)."""

    def __init__(self, data_dir: str | Path, split: str, synonyms: str | Path | None = None) -> None:
        self.images = load_coco(annotation_path(data_dir, split)).imgs
        paths = object_files(data_dir, "instances", split, (image["file_name"] for image in self.images.values()))
        self.boxes: dict[int, dict[str, list[tuple[float, ...]]]] = {image_id: {} for image_id in self.images}
        self.groups: dict[str, str] = {}
        names: list[str] = []
        for path in paths:
            coco = load_instances(path)
            for category in coco.dataset["categories"]:
                self.groups.setdefault(category["name"], category.get("supercategory") or category["name"])
                names += [category["name"]] if category["name"] not in names else []
            for annotation in coco.dataset.get("annotations", []):
                if annotation["image_id"] in self.boxes:
                    self.boxes[annotation["image_id"]].setdefault(coco.cats[annotation["category_id"]]["name"], []) \
                        .append(tuple(annotation["bbox"]))
        self.vocabulary = objects.vocabulary_for(names, Path(data_dir) / "annotations", synonyms)

    def trials(self, maps: WordMaps, image_id: int, transform: Preprocess) -> list[tuple[str, bool, float]]:
        """(supercategory, hit, random rate) for each phrase of the caption naming a category the image has."""
        image, found = self.images[image_id], []
        for position, category in objects.pointed_mentions(maps.words, self.vocabulary):
            boxes = self.boxes[image_id].get(category)
            if boxes:
                found.append((self.groups.get(category, category),
                              *point_at(maps.cells[position], boxes, image["width"], image["height"], transform)))
        return found


def has_instances(data_dir: str | Path, split: str) -> bool:
    """Whether the split has the instance annotations the pointing game reads."""
    try:
        images = load_coco(annotation_path(data_dir, split)).imgs.values()
        object_files(data_dir, "instances", split, (image["file_name"] for image in images))
    except (FileNotFoundError, ValueError):
        return False
    return True


def pointing_game(captioner: Captioner, data_dir: str | Path | None = None, split: str = "test",
                  beam_size: int = 1, batch_size: int = 64, max_images: int = 0, progress: bool = True,
                  synonyms: str | Path | None = None) -> dict:
    """The pointing game on a split with instance annotations: how often the map of a generated phrase naming an
    object peaks inside a box of that object's category, next to the rate of a point drawn at random, overall and
    per supercategory."""
    data_dir = data_dir or captioner.config.data_dir
    instances = InstanceBoxes(data_dir, split, synonyms)
    loader = get_loader(captioner.transform, mode="test", batch_size=batch_size, data_dir=data_dir, split=split)
    names, trials, done = instances.vocabulary.head_words, [], 0
    for batch in progress_bar(loader, desc=f"pointing game ({split})", unit="batch", disable=not progress):
        count = min(len(batch.image_ids), max_images - done) if max_images else len(batch.image_ids)
        for image_id, maps in zip(batch.image_ids, word_maps(captioner, batch.images[:count], beam_size, only=names)):
            trials += instances.trials(maps, image_id, captioner.transform)
        done += count
        if max_images and done >= max_images:
            break
    return summarise(trials, split, beam_size, done, sorted(set(instances.groups.values())))


def summarise(trials: list[tuple[str, bool, float]], split: str, beam_size: int, images: int,
              groups: list[str] | None = None) -> dict:
    """Hit rate and random rate over all trials and per supercategory."""
    def rates(chosen: list[tuple[str, bool, float]]) -> dict:
        count = len(chosen)
        return {"words": count, "hits": sum(hit for _, hit, _ in chosen),
                "hit_rate": sum(hit for _, hit, _ in chosen) / count if count else float("nan"),
                "random_rate": sum(rate for _, _, rate in chosen) / count if count else float("nan")}
    groups = groups if groups is not None else sorted({group for group, _, _ in trials})
    per_group = {group: rates([trial for trial in trials if trial[0] == group]) for group in groups}
    return {"split": split, "beam_size": beam_size, "images": images, **rates(trials), "per_group": per_group}


def describe(result: dict) -> str:
    """One line on a pointing_game result."""
    if not result["words"]:
        return f"no caption of the {result['images']} images names an object that is in its image: nothing to point at"
    return (f"hit rate {result['hit_rate']:.3f} over {result['words']} object words in {result['images']} images, "
            f"against {result['random_rate']:.3f} for a random point")
