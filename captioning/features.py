"""Feature cache: pooled backbone features of every image of a split, computed once, memory-mapped, keyed by image id.

With a frozen backbone the pooled features never change, so training only needs the projection layer and the
decoder: reading a 2048-float row replaces decoding a JPEG and a ResNet-50 forward pass. The cache records what
produced it (backbone weights fingerprint, preprocessing, precision, annotation file); a cache made with other
settings is rebuilt, never silently reused. Images are preprocessed with the evaluation transform (resize, centre
crop), so random crops and flips do not apply while training from the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from captioning import distributed
from captioning.annotations import annotation_path
from captioning.config import Config
from data_loader import DRAFT_TOLERANCE, Preprocess, get_loader
from captioning.files import atomic_write, write_json_atomic
from model import COUNT_FEATURES, EncoderCNN
from captioning.progress import progress as progress_bar
from captioning.runtime import autocast_dtype

CACHE_VERSION = 2
EXTRACT_BATCH = 64  # images per forward pass when extracting features


class FeatureStore:
    """Read-only access to a split's cached features: get(image_id) -> (feature_size,) float tensor or None."""

    def __init__(self, array_path: Path, meta: dict) -> None:
        self.path = Path(array_path)
        self.array = np.load(array_path, mmap_mode="r")  # (images, feature_size) float16
        self.meta = meta
        self.row = {image_id: row for row, image_id in enumerate(meta["image_ids"])}
        self.missing = set(meta["missing"])

    def __getstate__(self) -> dict:
        # A pickled np.memmap carries all its data: a DataLoader worker started by spawn (macOS, Windows) would get
        # a copy of the whole cache. Workers reopen the file instead.
        return {key: value for key, value in self.__dict__.items() if key != "array"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.array = np.load(self.path, mmap_mode="r")

    def get(self, image_id: int) -> torch.Tensor | None:
        if image_id in self.missing or image_id not in self.row:
            return None  # the image could not be read when the cache was built: skipped like a corrupt image
        return torch.from_numpy(np.asarray(self.array[self.row[image_id]], dtype=np.float32))

    def __len__(self) -> int:
        return len(self.row)


def backbone_fingerprint(encoder: EncoderCNN) -> str:
    """SHA-256 over the backbone's weights and BatchNorm statistics (and the centre head's, when it is read):
    identifies the features exactly."""
    digest = hashlib.sha256()
    head = {} if encoder.objects is None else {f"objects.{name}": value for name, value in
                                               encoder.objects.state_dict().items()}
    for name, tensor in {**encoder.backbone.state_dict(), **head}.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(encoder: EncoderCNN, config: Config, split: str, device: torch.device) -> dict:
    """Everything that determines the cached features."""
    annotations = annotation_path(config.data_dir, split)
    stat = annotations.stat()
    return {"version": CACHE_VERSION, "backbone": config.backbone, "weights": backbone_fingerprint(encoder),
            "image_size": config.image_size, "resize_size": config.resize_size,
            "transform": repr(Preprocess.of(config)),
            "decode": f"jpeg draft >= {DRAFT_TOLERANCE} x resize_size",
            "precision": str(autocast_dtype(device, config.precision)), "annotations": annotations.name,
            "annotations_size": stat.st_size, "annotations_mtime_ns": stat.st_mtime_ns,
            **({"cells": encoder.attention_stage} if encoder.attention else {}),
            **({"objects": f"{encoder.objects.out_channels} classes, {COUNT_FEATURES} count features"}
               if encoder.objects is not None else {})}


def feature_store(encoder: EncoderCNN, config: Config, split: str, device: torch.device,
                  cache_dir: str | Path | None = None, progress: bool = True) -> FeatureStore:
    """The split's features: loaded when a cache with the same key exists, else extracted and written first.

    Without cache_dir the cache lives in <data_dir>/cache, or in <out>/cache when the data folder cannot be written
    (a shared, read-only COCO copy): that is checked before extracting, so no extraction is thrown away.
    """
    folders = [Path(cache_dir)] if cache_dir else [Path(config.data_dir) / "cache", Path(config.out) / "cache"]
    key = cache_key(encoder, config, split, device)
    stem = f"features_{split}_{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"
    # Under torchrun rank 0 looks and decides; the others follow, so that all extract or none does.
    store = distributed.from_main(lambda: cached_store(folders, stem, key))
    if store is not None:
        return store
    folder = distributed.from_main(lambda: cache_folder(folders))
    array_path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    meta = {**extract_features(encoder, config, split, device, array_path, progress), "key": key}
    # Written last: its presence marks a complete cache; the other ranks wait for it.
    distributed.from_main(lambda: write_json_atomic(meta_path, meta))
    return FeatureStore(array_path, meta)


def cached_store(folders: list[Path], stem: str, key: dict) -> FeatureStore | None:
    """The first complete cache of that name and key in folders, if any."""
    for folder in folders:
        array_path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
        if meta_path.exists() and array_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("key") == key:
                    store = FeatureStore(array_path, meta)
                    if store.array.shape != (len(meta["image_ids"]), meta["feature_size"]):
                        raise ValueError(f"it holds {store.array.shape} features for {len(meta['image_ids'])} images")
                    return store
            except (OSError, ValueError, KeyError, AttributeError) as error:  # truncated, garbled, cut short
                warnings.warn(f"the feature cache {array_path} is damaged ({error}): extracting it again")
    return None


def cache_folder(folders: list[Path]) -> Path:
    """The first writable folder (a warning when it is not the first choice); OSError when none is."""
    folder = next((folder for folder in folders if writable(folder)), None)
    if folder is None:
        raise OSError(f"cannot write the feature cache to {' or '.join(map(str, folders))}: "
                      "make one writable, or train with --feature-cache off")
    if folder != folders[0]:
        warnings.warn(f"{folders[0]} is not writable: the feature cache goes to {folder}")
    return folder


def writable(folder: Path) -> bool:
    """Whether files can be created in folder (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@torch.no_grad()
def extract_features(encoder: EncoderCNN, config: Config, split: str, device: torch.device, array_path: Path,
                     progress: bool = True) -> dict:
    """Run the backbone over every image of the split and save (images, feature_size) float16 rows atomically.

    Under torchrun each rank computes its share of every batch and writes those rows into one file that rank 0
    creates, under a temporary name until every rank is done."""
    ranks = distributed.world_size()
    transform = Preprocess.of(config)
    loader = get_loader(transform, mode="test", batch_size=EXTRACT_BATCH * ranks, num_workers=config.num_workers,
                        data_dir=config.data_dir, split=split, pin_memory=device.type == "cuda",
                        rank=distributed.rank(), world_size=ranks)
    image_ids = loader.dataset.image_ids
    row = {image_id: index for index, image_id in enumerate(image_ids)}
    shape = (len(image_ids), encoder.features_width(config.image_size))
    shared = distributed.from_main(lambda: shared_array(array_path, shape)) if ranks > 1 else None
    array = np.lib.format.open_memmap(shared, mode="r+") if shared else np.zeros(shape, dtype=np.float16)
    missing: list[int] = []
    was_training = encoder.training
    encoder.eval()
    for batch in progress_bar(loader, desc=f"caching {split} features", unit="batch",
                      disable=not progress or not distributed.is_main()):
        missing += batch.skipped_ids
        if not batch.image_ids:
            continue
        pooled = encoder.pooled_features(batch.images.to(device, non_blocking=True), config.precision)
        array[[row[image_id] for image_id in batch.image_ids]] = pooled.float().cpu().numpy()
    encoder.train(was_training)
    missing = [image_id for share in distributed.all_gather(missing) for image_id in share]
    if shared:
        array.flush()
        distributed.barrier()  # every rank's rows are in the file
        distributed.from_main(lambda: os.replace(shared, array_path))
    else:
        with atomic_write(array_path) as file:
            np.save(file, array)
    return {"image_ids": image_ids, "missing": missing, "feature_size": shape[1]}


def shared_array(array_path: Path, shape: tuple[int, int]) -> Path:
    """A zero-filled float16 .npy beside array_path, under a temporary name, that every rank can open to write."""
    temporary = array_path.with_name(f"{array_path.name}.{secrets.token_hex(4)}.tmp")
    np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16, shape=shape).flush()
    return temporary
