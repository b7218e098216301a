"""Loader: COCO captions on disk -> batches of (images or cached features, padded caption ids, lengths).

A batch holds whole images with *all* of their captions, so each image is decoded and pushed through the CNN once
per epoch however many captions it has, and every caption is visited exactly once per epoch.
"""
from __future__ import annotations

import functools
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from captioning.annotations import annotation_path, image_path, load_coco
from vocabulary import Vocabulary, tokenized_captions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A JPEG may be decoded at a reduced scale whose shorter side is this fraction of the size it is resized to (a
# DCT-scaled decode is about 4x cheaper at 1/2 scale; the small enlargement afterwards costs a little sharpness).
DRAFT_TOLERANCE = 0.9
MAX_IMAGE_PIXELS = 100_000_000  # larger files are refused rather than decoded (a 10,000 x 10,000 image is allowed)


class ImageLoadError(Exception):
    """An image file is missing, truncated, not an image, or unusable."""


def load_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open an image as RGB (grayscale, CMYK, palette, RGBA converted); raises ImageLoadError with the reason.

    With min_side, a JPEG is decoded at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or 1/8, Pillow's draft
    mode) as long as its shorter side stays at least DRAFT_TOLERANCE x min_side: far less work than decoding at full
    size and shrinking afterwards. A 640x480 COCO photo bound for 256 px is decoded at 320x240 and the resize then
    enlarges it by 7%; bench.py reports the difference this makes to the pixels.
    """
    if not os.path.isfile(path):  # a pipe or a device would block open() forever; a folder is no image either
        raise ImageLoadError(f"{path}: file not found" if not os.path.exists(path) else
                             f"{path}: not a regular file (a folder, a pipe or a device)")
    try:
        with warnings.catch_warnings():  # PIL's DecompressionBombWarning: the size is checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageLoadError(f"{path}: {image.width}x{image.height} is too large to be a photo")
            if min_side and image.format == "JPEG":
                scale = min(image.width, image.height) / (DRAFT_TOLERANCE * min_side)
                image.draft("RGB", (math.ceil(image.width / scale), math.ceil(image.height / scale)))
            if image.mode in WIDE_MODES:  # Pillow would clip these to 0..255: 16-bit grey turns white, floats black
                return _to_eight_bits(image).convert("RGB")
            if image.mode == "RGBA" or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")  # flatten on white rather than on whatever the hidden pixels hold
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, image).convert("RGB")
            return image.convert("RGB")  # forces the full decode, so truncation is caught here
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"{path}: cannot read image ({error})") from None


WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit, 32-bit integer and float single-channel


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """An 8-bit greyscale copy of a 16-bit, 32-bit or float image, scaled by the range its values are in: floats
    of 0..1 (as float TIFFs hold them) or integers of 0..65535 (16-bit PNGs), else 0..their maximum."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    if image.mode == "F" and top <= 1.0:
        scale = 1.0
    elif top <= 255:
        scale = 255.0
    elif top <= 65535:
        scale = 65535.0
    else:
        scale = top
    eight_bits = np.clip(np.nan_to_num(values / scale * 255.0), 0, 255).round().astype(np.uint8)
    return Image.fromarray(eight_bits, mode="L")


FITS = ("crop", "squash", "pad")  # how a non-square image becomes the CNN's square input (Preprocess)


class Preprocess:
    """The one preprocessing used by training, evaluation, caption.py, the feature cache and the pretraining's maps.

    fit "crop": resize the shorter side to resize_size and crop image_size (random while training if random_crop,
    else centre): a wide image loses its sides. "squash": resize to resize_size x resize_size, the aspect ratio
    changed, nothing lost. "pad": resize the longer side to resize_size and pad the shorter one to a square with the
    ImageNet mean (zero after normalisation), nothing lost. Then the crop of image_size (which "squash" and "pad"
    need only when resize_size is larger), optional random flips while training, and ImageNet normalisation: an RGB
    PIL image or a (3, H, W) uint8 tensor in, a (3, image_size, image_size) float tensor out. The work is done on
    uint8 tensors (torch's vectorised antialiased resize, faster than Pillow's).
    """

    def __init__(self, image_size: int, resize_size: int | None = None, train: bool = False,
                 random_crop: bool = True, hflip: bool = False, fit: str = "crop") -> None:
        self.image_size, self.resize_size = image_size, resize_size or image_size
        if self.resize_size < image_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than the crop image_size {image_size}")
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.fit = fit
        self.random_crop, self.hflip = train and random_crop, train and hflip
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255  # (3, 1, 1), on the uint8 scale
        self.inv_std = 1 / (torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)

    @classmethod
    def of(cls, config, train: bool = False) -> "Preprocess":
        """The preprocessing a config asks for (its image_size, resize_size, image_fit; augmentation if train)."""
        return cls(config.image_size, config.resize_size, train=train, random_crop=config.random_crop,
                   hflip=config.hflip, fit=getattr(config, "image_fit", "crop"))

    def resized(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(new width, new height, left pad, top pad) of an image of this size before the crop: the padded square
        with "pad", the resized image otherwise (no pad)."""
        if self.fit == "squash":
            return self.resize_size, self.resize_size, 0, 0
        if self.fit == "pad":
            long = max(width, height)
            new_width, new_height = (int(self.resize_size * width / long), int(self.resize_size * height / long))
            return new_width, new_height, (self.resize_size - new_width) // 2, (self.resize_size - new_height) // 2
        short = min(width, height)  # as torchvision resizes the shorter side
        if width == short:
            return self.resize_size, int(self.resize_size * height / width), 0, 0
        return int(self.resize_size * width / height), self.resize_size, 0, 0

    def _fitted(self, pixels: torch.Tensor, interpolation=TF.InterpolationMode.BILINEAR, fill: float = 0.0
                ) -> torch.Tensor:
        """(C, H, W) resized (and padded) as the fit says, before the crop."""
        new_width, new_height, left, top = self.resized(pixels.shape[-1], pixels.shape[-2])
        antialias = interpolation != TF.InterpolationMode.NEAREST
        pixels = TF.resize(pixels, [new_height, new_width], interpolation=interpolation, antialias=antialias)
        if self.fit == "pad":
            right, bottom = self.resize_size - new_width - left, self.resize_size - new_height - top
            pixels = TF.pad(pixels, [left, top, right, bottom], fill=fill)
        return pixels

    def __call__(self, image: Image.Image | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The input the CNN sees; generator draws the random crop and flip (the global stream when None)."""
        pixels = TF.pil_to_tensor(image) if isinstance(image, Image.Image) else image  # (3, H, W) uint8
        if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.size(0) != 3:
            raise ValueError(f"expected an RGB image or a (3, H, W) uint8 tensor, got {pixels.dtype} "
                             f"{tuple(pixels.shape)}")
        if self.fit == "pad":  # on a square of the mean colour, which normalises to zero
            new_width, new_height, left, top = self.resized(pixels.shape[-1], pixels.shape[-2])
            canvas = self.mean.round().to(torch.uint8).expand(3, self.resize_size, self.resize_size).clone()
            canvas[:, top:top + new_height, left:left + new_width] = TF.resize(pixels, [new_height, new_width],
                                                                               antialias=True)
            pixels = canvas
        else:
            pixels = self._fitted(pixels)
        size, (height, width) = self.image_size, pixels.shape[-2:]
        if self.random_crop:
            top = int(torch.randint(0, height - size + 1, (), generator=generator))
            left = int(torch.randint(0, width - size + 1, (), generator=generator))
            pixels = pixels[:, top:top + size, left:left + size]
        else:
            pixels = TF.center_crop(pixels, [size, size])
        if self.hflip and torch.rand((), generator=generator) < 0.5:
            pixels = pixels.flip(-1)
        return pixels.to(torch.float32).sub_(self.mean).mul_(self.inv_std)  # (3, size, size)

    @property
    def random(self) -> bool:
        """Whether each call draws random numbers (augmentation while training)."""
        return self.random_crop or self.hflip

    def label_map(self, labels: torch.Tensor) -> torch.Tensor:
        """An (H, W) map of class numbers over the original image, as the CNN sees the image: (image_size,
        image_size), resized with the nearest class (padding: 0) and cropped as __call__ crops at evaluation."""
        resized = self._fitted(labels[None].float(), TF.InterpolationMode.NEAREST)
        return TF.center_crop(resized, [self.image_size, self.image_size])[0].round().long()

    def _offsets(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(x scale, y scale, x offset, y offset): the original's point (x, y) lands at (x * sx - ox, y * sy - oy)
        of the input (centre crop)."""
        new_width, new_height, pad_left, pad_top = self.resized(width, height)
        full_width, full_height = (self.resize_size, self.resize_size) if self.fit == "pad" else (new_width,
                                                                                                  new_height)
        left = int(round((full_width - self.image_size) / 2.0)) - pad_left
        top = int(round((full_height - self.image_size) / 2.0)) - pad_top
        return new_width / width, new_height / height, left, top

    def point(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Where the original image's point (x, y) lands in the (centre-cropped) input, in its pixels; outside
        [0, image_size) when the crop leaves it out."""
        scale_x, scale_y, left, top = self._offsets(width, height)
        return x * scale_x - left, y * scale_y - top

    def source(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """The inverse of point: the original image's point that the input's pixel (x, y) shows."""
        scale_x, scale_y, left, top = self._offsets(width, height)
        return (x + left) / scale_x, (y + top) / scale_y

    def window(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the part of the original image the input shows (beyond its sides where padded)."""
        return (*self.source(0, 0, width, height), *self.source(self.image_size, self.image_size, width, height))

    def __repr__(self) -> str:
        crop = "random" if self.random_crop else "centre"
        resize = {"crop": "resize shorter side to", "squash": "resize to a square of",
                  "pad": "resize longer side and pad to"}[self.fit]
        return (f"Preprocess({resize} {self.resize_size}, {crop} crop {self.image_size}, "
                f"hflip={self.hflip}, ImageNet normalisation)")


class CocoCaptionDataset(Dataset):
    """One item per image: the image (or its cached pooled features) with every one of its captions as ids."""

    def __init__(self, data_dir: str | Path, split: str, vocab: Vocabulary | None,
                 transform: Callable | None = None, features: "FeatureStore | None" = None,
                 max_caption_length: int = 50, cache_dir: str | Path | None = "auto", seed: int = 0) -> None:
        self.data_dir, self.split, self.vocab, self.seed = Path(data_dir), split, vocab, seed
        self.transform, self.features = transform, features
        self.annotation_file = annotation_path(data_dir, split)
        self.coco = load_coco(self.annotation_file)
        cache = self.data_dir / "cache" if cache_dir == "auto" else (Path(cache_dir) if cache_dir else None)
        tokens = tokenized_captions(self.coco, self.annotation_file, cache)
        self.image_ids = sorted(self.coco.imgs)
        self.captions: dict[int, list[list[str]]] = {image_id: [] for image_id in self.image_ids}
        for ann_id, ann in sorted(self.coco.anns.items()):
            if ann["image_id"] in self.captions and tokens[ann_id]:
                self.captions[ann["image_id"]].append(tokens[ann_id][:max_caption_length])
        self.file_names = {image_id: self.coco.imgs[image_id]["file_name"] for image_id in self.image_ids}
        self.uncaptioned = [image_id for image_id in self.image_ids if not self.captions[image_id]]
        if vocab is not None:  # training/validation needs captions; captioning a split does not
            self.image_ids = [image_id for image_id in self.image_ids if self.captions[image_id]]
        if not self.image_ids:
            raise ValueError(f"split {split!r} in {self.annotation_file} has no captioned images")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> dict:
        # What a DataLoader worker needs; the parsed annotation file (references) stays in the main process, so a
        # worker started by spawn does not receive a copy of it.
        return {key: value for key, value in self.__dict__.items() if key != "coco"}

    def caption_counts(self) -> list[int]:
        """Number of captions of each item, in item order."""
        return [len(self.captions[image_id]) for image_id in self.image_ids]

    def image_file(self, image_id: int) -> Path:
        return image_path(self.data_dir, self.split, self.file_names[image_id])

    def references(self) -> dict[int, list[str]]:
        """Raw human captions by image id, for the metrics."""
        return {image_id: [ann["caption"] for ann in self.coco.imgToAnns[image_id]] for image_id in self.image_ids}

    def __getitem__(self, index: int) -> dict:
        """The item at index (an ItemIndex from the loader's sampler says for which epoch)."""
        image_id = self.image_ids[index]
        item = {"image_id": image_id, "image": None, "error": None}
        if self.vocab is not None:
            item["captions"] = [torch.tensor([self.vocab.start_index] + [self.vocab(word) for word in words]
                                             + [self.vocab.end_index]) for words in self.captions[image_id]]
        if self.features is not None:
            item["image"] = self.features.get(image_id)
            return item
        try:
            image = load_image(self.image_file(image_id), min_side=_min_side(self.transform))
            item["image"] = self.transform(image, *self.draws(index, image_id)) if self.transform else image
        except ImageLoadError as error:
            item["error"] = str(error)  # skipped and counted by collate / the training loop, never a crash
        return item


    def draws(self, index: int, image_id: int) -> tuple[torch.Generator, ...]:
        """(generator,) for a transform that augments, seeded by (seed, epoch, image): the crops and flips of an
        epoch are the same in a run resumed mid-epoch (a batch loaded but not trained before the interruption is
        drawn again, the same), in any worker process and on any rank; () otherwise."""
        if not (isinstance(self.transform, Preprocess) and self.transform.random):
            return ()
        epoch = getattr(index, "epoch", 0)
        state = np.random.SeedSequence([self.seed, epoch, image_id]).generate_state(1, np.uint64)[0]
        return (torch.Generator().manual_seed(int(state)),)


class ItemIndex(int):
    """An item's index that also says which epoch it is drawn for (CocoCaptionDataset.draws); it reads as the
    plain index everywhere else."""

    epoch: int

    def __new__(cls, index: int, epoch: int) -> "ItemIndex":
        item = super().__new__(cls, index)
        item.epoch = epoch
        return item

    def __reduce__(self):  # to worker processes
        return ItemIndex, (int(self), self.epoch)


def _min_side(transform: Callable | None) -> int | None:
    """The shorter side the transform resizes to, so images can be decoded no larger than needed."""
    return transform.resize_size if isinstance(transform, Preprocess) else None


@dataclass
class Batch:
    """Images (or pooled features) of the batch and their captions, padded, with lengths."""

    images: torch.Tensor  # (images, 3, H, W) pixels, or (images, feature_size) cached features: holds_features
    image_ids: list[int]
    captions: torch.Tensor | None = None  # (captions, T) word ids, <pad> after each caption
    lengths: torch.Tensor | None = None  # (captions,) including <start> and <end>
    image_index: torch.Tensor | None = None  # (captions,) which image of the batch each caption belongs to
    skipped: list[str] | None = None  # errors of the images left out of the batch
    skipped_ids: list[int] | None = None  # ... and their image ids

    @property
    def holds_features(self) -> bool:
        """Whether `images` holds pooled features from the feature cache instead of pixels."""
        return self.images.dim() == 2

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        move = lambda tensor: None if tensor is None else tensor.to(device, non_blocking=non_blocking)
        return Batch(move(self.images), self.image_ids, move(self.captions), move(self.lengths),
                     move(self.image_index), self.skipped, self.skipped_ids)

    def pin_memory(self) -> "Batch":
        pin = lambda tensor: None if tensor is None else tensor.pin_memory()
        return Batch(pin(self.images), self.image_ids, pin(self.captions), pin(self.lengths),
                     pin(self.image_index), self.skipped, self.skipped_ids)


def collate(items: list[dict], pad_index: int = 0) -> Batch:
    """Stack images, flatten and pad their captions; unreadable images are dropped and reported in `skipped`."""
    skipped = [item["error"] or f"image {item['image_id']}: no features" for item in items if item["image"] is None]
    skipped_ids = [item["image_id"] for item in items if item["image"] is None]
    items = [item for item in items if item["image"] is not None]
    if not items:
        return Batch(torch.empty(0), [], skipped=skipped, skipped_ids=skipped_ids)
    images = torch.stack([item["image"] for item in items])
    batch = Batch(images, [item["image_id"] for item in items], skipped=skipped, skipped_ids=skipped_ids)
    if "captions" in items[0]:
        captions = [caption for item in items for caption in item["captions"]]
        batch.lengths = torch.tensor([len(caption) for caption in captions])
        batch.captions = torch.nn.utils.rnn.pad_sequence(captions, batch_first=True, padding_value=pad_index)
        batch.image_index = torch.tensor([index for index, item in enumerate(items) for _ in item["captions"]])
    return batch


class ImageBatchSampler(Sampler[list[int]]):
    """Batches of image indices: each epoch a fresh permutation (seeded by seed + epoch), every image exactly once.

    Within a window of `sort_window` batches, images are ordered by caption length so each batch pads little.
    `start_batch` skips the first batches of the epoch (resuming a run interrupted mid-epoch).

    Under torchrun, batch_size is the global batch: every rank builds the same batches and takes its share of each,
    images rank, rank + world_size, ... (similar caption lengths on every rank). In training (shuffle) a global
    batch with fewer images than ranks, the epoch's last one at most, is dropped, so that no rank has an empty
    share; in order (validation, captioning) it is kept and some ranks get an empty batch.
    """

    def __init__(self, caption_lengths: Sequence[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 sort_window: int = 20, drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} ranks")
        self.lengths, self.batch_size, self.shuffle = list(caption_lengths), batch_size, shuffle
        self.seed, self.sort_window, self.drop_last = seed, sort_window, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch whose order to give, and how many of its (global) batches are done already."""
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order, as the whole job sees them."""
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
            window = self.batch_size * self.sort_window
            order = [index for start in range(0, len(order), window)
                     for index in sorted(order[start:start + window], key=self.lengths.__getitem__)]
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            rng.shuffle(batches)  # sorted windows would otherwise run short captions first
        # Dropped after the shuffle, so that the other batches come in the order one process takes them.
        return [batch for batch in batches if len(batch) >= self.min_batch()]

    def min_batch(self) -> int:
        """The smallest batch kept: one image, or in training under torchrun one per rank."""
        return self.world_size if self.shuffle else 1

    def batches(self) -> list[list[int]]:
        """This rank's share of every batch of the current epoch."""
        return [batch[self.rank::self.world_size] for batch in self.global_batches()]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches()[self.start_batch:]:
            yield [ItemIndex(index, self.epoch) for index in batch]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest >= self.min_batch() and not self.drop_last else 0)


def get_loader(transform: Callable | None, mode: str = "train", batch_size: int = 32,
               data_dir: str | Path = "data/synthetic", split: str | None = None, vocab: Vocabulary | None = None,
               features: "FeatureStore | None" = None, num_workers: int = 0, seed: int = 0,
               max_caption_length: int = 50, pin_memory: bool = False, rank: int = 0, world_size: int = 1
               ) -> DataLoader:
    """A DataLoader over one split.

    mode "train": shuffled batches with captions as ids of vocab (made from the training split: vocabulary.py);
    mode "val": ordered batches with captions; mode "test": ordered batches of images only, for captioning a split.
    With features (a feature cache), batches hold pooled features instead of images and transform is unused.
    rank, world_size: this process's share of every batch of batch_size images under torchrun (ImageBatchSampler).
    """
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode must be train, val or test, got {mode!r}")
    if mode != "test" and vocab is None:
        raise ValueError(f"a {mode} loader needs the vocabulary its captions are written in")
    split = split or mode
    dataset = CocoCaptionDataset(data_dir, split, vocab if mode != "test" else None, transform, features,
                                 max_caption_length, seed=seed)
    counts = dataset.caption_counts() if mode != "test" else [1] * len(dataset)
    mean_lengths = [sum(map(len, dataset.captions[image_id])) / max(count, 1)
                    for image_id, count in zip(dataset.image_ids, counts)]
    sampler = ImageBatchSampler(mean_lengths, batch_size, shuffle=mode == "train", seed=seed, rank=rank,
                                world_size=world_size)
    pad_index = vocab.pad_index if vocab is not None else 0
    # Persistent workers live as long as the loader (a training phase) instead of being started again each epoch.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, collate_fn=functools.partial(collate, pad_index=pad_index))
