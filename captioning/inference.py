"""Inference: a checkpoint -> captions for image files or a whole split, in batches.

Used by caption.py, evaluate.py and notebook 3, so all three decode exactly the same way.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from captioning.checkpoint import build_models, load_checkpoint
from data_loader import ImageLoadError, Preprocess, get_loader, load_image
from model import decode
from captioning.progress import progress as progress_bar
from captioning.runtime import resolve_device

T = TypeVar("T")


class Captioner:
    """A trained encoder + decoder with its vocabulary and preprocessing, rebuilt from a checkpoint alone."""

    def __init__(self, checkpoint: str | Path, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.state = load_checkpoint(checkpoint, map_location=self.device)
        self.encoder, self.decoder, self.vocab, self.config = build_models(self.state, self.device)
        self.encoder.to(memory_format=torch.channels_last)
        self.transform = Preprocess.of(self.config)

    @torch.no_grad()
    def caption_tensors(self, images: torch.Tensor, beam_size: int = 1, max_len: int | None = None) -> list[str]:
        """(batch, 3, H, W) preprocessed images -> one clean sentence each."""
        return [self.vocab.clean_sentence(ids) for ids in self.generate(images, beam_size, max_len).tolist()]

    @torch.no_grad()
    def generate(self, images: torch.Tensor, beam_size: int = 1, max_len: int | None = None) -> torch.Tensor:
        """(batch, 3, H, W) preprocessed images -> (batch, <= max_len) word ids ending at <end>."""
        return self.decode_feature_maps(self.feature_maps(images), beam_size, max_len)

    @torch.no_grad()
    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) preprocessed images -> (batch, C, h, w) the CNN's last feature map, in the run's
        precision."""
        return self.encoder.feature_map(images.to(self.device), self.config.precision)

    @torch.no_grad()
    def decode_feature_maps(self, feature_maps: torch.Tensor, beam_size: int = 1, max_len: int | None = None
                            ) -> torch.Tensor:
        """(batch, C, h, w) feature maps -> (batch, <= max_len) word ids ending at <end>."""
        features = self.encoder.project(self.encoder.pool(feature_maps, self.config.precision))
        return decode(self.decoder, features, beam_size, max_len or self.config.max_len)

    def caption_files(self, paths: Iterable[str | Path], beam_size: int = 1, batch_size: int = 32
                      ) -> Iterator[tuple[str, str | None, str | None]]:
        """(path, caption, None) per readable image, (path, None, reason) per unreadable one, in order."""
        return self.map_files(paths, lambda images: self.caption_tensors(images, beam_size), batch_size)

    def load(self, path: str | Path) -> torch.Tensor:
        """An image file -> (3, H, W) preprocessed tensor; raises ImageLoadError with the reason."""
        return self.transform(load_image(path, min_side=self.config.resize_size))

    def map_files(self, paths: Iterable[str | Path], function: Callable[[torch.Tensor], list[T]],
                  batch_size: int = 32) -> Iterator[tuple[str, T | None, str | None]]:
        """function applied to batches of the readable images: (path, result, None) per readable image,
        (path, None, reason) per unreadable one, in order."""
        paths = iter(paths)
        while chunk := list(itertools.islice(paths, batch_size)):
            tensors, results = [], []
            for path in chunk:
                try:
                    tensors.append(self.load(path))
                    results.append([str(path), None, None])
                except ImageLoadError as error:
                    results.append([str(path), None, str(error)])
            outputs = iter(function(torch.stack(tensors)) if tensors else [])
            for result in results:
                if result[2] is None:
                    result[1] = next(outputs)
                yield tuple(result)

    def caption_split(self, data_dir: str | Path, split: str, beam_size: int = 1, batch_size: int = 64,
                      num_workers: int = 0, max_images: int = 0, progress: bool = True
                      ) -> tuple[dict[int, str], list[str]]:
        """Captions for every readable image of a split by image id, and the errors of the images skipped."""
        loader = get_loader(self.transform, mode="test", batch_size=batch_size, num_workers=num_workers,
                            data_dir=data_dir, split=split, pin_memory=self.device.type == "cuda")
        captions: dict[int, str] = {}
        skipped: list[str] = []
        for batch in progress_bar(loader, desc=f"captioning {split}", unit="batch", disable=not progress):
            skipped += batch.skipped or []
            if batch.image_ids:
                captions.update(zip(batch.image_ids, self.caption_tensors(batch.images, beam_size)))
            if max_images and len(captions) >= max_images:
                break
        if max_images:  # the limit falls inside a batch
            captions = dict(itertools.islice(captions.items(), max_images))
        return captions, skipped
