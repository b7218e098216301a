"""Word maps: where in the image each generated word comes from (Grad-CAM for captions), and the pointing game
that checks them against the synthetic set's shape boxes.

Grad-CAM (Selvaraju et al. 2017): the gradient of a word's log-probability with respect to the CNN's last
convolutional feature map, averaged over space, weighs that map's channels; the ReLU of the weighted sum is the
word's map. Our encoder pools the feature map globally, so each word needs a backward pass through the decoder and
the pooling only, not through the CNN. The pointing game (Zhang et al. 2016): a map "points" at its maximum; a shape
word scores a hit when that point lies inside a box of the shape it names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from annotations import annotation_path, load_coco
from data_loader import get_loader
from inference import Captioner
from model import DecoderRNN, EncoderCNN
from synthetic_data import SHAPES, shape_words


@dataclass
class WordMaps:
    """One image's generated caption with a heat map per word."""

    image: torch.Tensor  # (3, H, W) the preprocessed image, as the CNN saw it (normalised)
    words: list[str]  # the generated tokens up to <end>, punctuation included (only those asked for, if any)
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
    maps of these words alone, which is much cheaper)."""
    feature_maps = captioner.feature_maps(images)  # one CNN pass for the caption and its maps
    ids = captioner.decode_feature_maps(feature_maps, beam_size, max_len)  # (batch, T), <end> then <pad>
    vocab = captioner.vocab
    wanted = [[position for position in range(_length(row, vocab.end_index))
               if row[position] not in (vocab.start_index, vocab.pad_index)
               and (only is None or vocab.idx2word[row[position]] in only)] for row in ids.tolist()]
    rows = torch.tensor([row for row, positions in enumerate(wanted) for _ in positions], dtype=torch.long)
    positions = torch.tensor([position for positions in wanted for position in positions], dtype=torch.long)
    cells = torch.zeros(0, *feature_maps.shape[-2:])
    if len(rows):
        cells = grad_cam(captioner.encoder, captioner.decoder, feature_maps, ids, rows.to(ids.device),
                         positions.to(ids.device)).cpu()  # (maps, h, w)
    results, start = [], 0
    for image, row, chosen in zip(images.cpu(), ids.tolist(), wanted):
        results.append(WordMaps(image, [vocab.idx2word[row[position]] for position in chosen],
                                cells[start:start + len(chosen)], vocab.clean_sentence(row)))
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


def crop_window(width: int, height: int, resize_size: int, image_size: int) -> tuple[float, float, float]:
    """(left, top, scale) of the preprocessing's centre crop in the original image's pixels: crop pixel (x, y) is
    original pixel (left + x * scale, top + y * scale). Mirrors data_loader.Preprocess (torchvision's resize of the
    shorter side, then its centre crop)."""
    short, long = sorted((width, height))
    new_long = int(resize_size * long / short)
    new_width, new_height = (resize_size, new_long) if width <= height else (new_long, resize_size)
    left, top = int(round((new_width - image_size) / 2.0)), int(round((new_height - image_size) / 2.0))
    scale_x, scale_y = width / new_width, height / new_height
    return left * scale_x, top * scale_y, (scale_x + scale_y) / 2


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


def point_word(maps: WordMaps, position: int, objects: list[dict], width: int, height: int, resize_size: int,
               image_size: int) -> tuple[str, bool, float] | None:
    """(shape, hit, random rate) for a word that names a shape in the image; None for any other word.

    The random rate is the chance that a point drawn uniformly over what the CNN saw lands in a box of that shape.
    """
    shape = shape_words().get(maps.words[position])
    boxes = [tuple(item["bbox"]) for item in objects if item["shape"] == shape]
    if not boxes:
        return None
    left, top, scale = crop_window(width, height, resize_size, image_size)
    window = (left, top, left + image_size * scale, top + image_size * scale)
    random_rate = union_area(boxes, window) / (image_size * scale) ** 2
    point = peak_point(maps.cells[position], image_size)
    if point is None:
        return shape, False, random_rate
    x, y = left + point[0] * scale, top + point[1] * scale
    return shape, any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes), random_rate


def has_shape_boxes(data_dir: str | Path, split: str) -> bool:
    """Whether every image of the split lists its shapes' boxes, as the synthetic generator writes them."""
    return all("objects" in image for image in load_coco(annotation_path(data_dir, split)).imgs.values())


def pointing_game(captioner: Captioner, data_dir: str | Path | None = None, split: str = "test",
                  beam_size: int = 1, batch_size: int = 64, max_images: int = 0, progress: bool = True
                  ) -> dict:
    """The pointing game on a synthetic split: how often a generated shape word's map peaks inside that shape's box,
    next to the rate of a point drawn at random, overall and per shape. Needs the generator's `objects` boxes."""
    data_dir = data_dir or captioner.config.data_dir
    if not has_shape_boxes(data_dir, split):
        raise ValueError(f"{annotation_path(data_dir, split)} has no shape boxes ('objects'): the pointing game "
                         "needs a split made by synthetic_data.py")
    images = load_coco(annotation_path(data_dir, split)).imgs
    loader = get_loader(captioner.transform, mode="test", batch_size=batch_size, data_dir=data_dir, split=split)
    config, names, trials, done = captioner.config, shape_words(), [], 0
    for batch in tqdm(loader, desc=f"pointing game ({split})", disable=not progress):
        count = min(len(batch.image_ids), max_images - done) if max_images else len(batch.image_ids)
        for image_id, maps in zip(batch.image_ids, word_maps(captioner, batch.images[:count], beam_size, only=names)):
            info = images[image_id]
            trials += [trial for position in range(len(maps.words))
                       if (trial := point_word(maps, position, info["objects"], info["width"], info["height"],
                                               config.resize_size, config.image_size)) is not None]
        done += count
        if max_images and done >= max_images:
            break
    return summarise(trials, split, beam_size, done)


def summarise(trials: list[tuple[str, bool, float]], split: str, beam_size: int, images: int) -> dict:
    """Hit rate and random rate over all trials and per shape."""
    def rates(chosen: list[tuple[str, bool, float]]) -> dict:
        count = len(chosen)
        return {"words": count, "hits": sum(hit for _, hit, _ in chosen),
                "hit_rate": sum(hit for _, hit, _ in chosen) / count if count else float("nan"),
                "random_rate": sum(rate for _, _, rate in chosen) / count if count else float("nan")}
    per_shape = {shape: rates([trial for trial in trials if trial[0] == shape]) for shape in SHAPES}
    return {"split": split, "beam_size": beam_size, "images": images, **rates(trials), "per_shape": per_shape}


def describe(result: dict) -> str:
    """One line on a pointing_game result."""
    if not result["words"]:
        return f"no caption of the {result['images']} images names a shape that is in its image: nothing to point at"
    return (f"hit rate {result['hit_rate']:.3f} over {result['words']} shape words in {result['images']} images, "
            f"against {result['random_rate']:.3f} for a random point")
