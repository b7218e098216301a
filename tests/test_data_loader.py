"""Loader: every caption once per epoch, robust image decoding, tokens cached, batches padded with lengths."""
from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captioning import files
import vocabulary
from conftest import tiny_config
from captioning.annotations import annotation_path
from data_loader import (IMAGENET_MEAN, IMAGENET_STD, CocoCaptionDataset, ImageBatchSampler, ImageLoadError,
                         Preprocess, get_loader, load_image)
from captioning.features import FeatureStore, feature_store
from model import EncoderCNN
from vocabulary import Vocabulary, get_vocabulary


def test_sampler_visits_every_image_once_per_epoch_in_a_new_order():
    lengths = [float(n % 7) for n in range(103)]
    sampler = ImageBatchSampler(lengths, batch_size=10, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 11
        flat = [index for batch in batches for index in batch]
        assert sorted(flat) == list(range(103))
        orders.append(flat)
    assert orders[0] != orders[1] != orders[2]
    sampler.set_epoch(1)
    assert [i for b in sampler for i in b] == orders[1]  # deterministic per epoch


def test_sampler_resumes_mid_epoch_with_the_remaining_batches():
    sampler = ImageBatchSampler(list(range(50)), batch_size=4, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=5)
    assert list(sampler) == full[5:]


def test_sampler_keeps_similar_lengths_together():
    lengths = [float(n % 13) for n in range(400)]
    sampler = ImageBatchSampler(lengths, batch_size=16, seed=0, sort_window=25)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in sampler) / len(sampler)
    unsorted = ImageBatchSampler(lengths, batch_size=16, seed=0, sort_window=1)
    spread_unsorted = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in unsorted) / len(unsorted)
    assert spread < spread_unsorted / 3


def test_train_loader_yields_every_caption_exactly_once(synthetic_dir, tmp_path):
    vocab = Vocabulary.from_annotations([annotation_path(synthetic_dir, "train")], threshold=1)
    loader = get_loader(Preprocess(32), mode="train", batch_size=7, data_dir=synthetic_dir, vocab=vocab)
    coco = loader.dataset.coco
    seen = Counter()
    for batch in loader:
        assert batch.images.shape[1:] == (3, 32, 32)
        assert batch.captions.shape[0] == batch.lengths.shape[0] == batch.image_index.shape[0]
        assert batch.captions.shape[1] == batch.lengths.max()  # padded to the longest caption only
        for row, length in zip(batch.captions, batch.lengths):
            assert row[0] == loader.dataset.vocab.start_index and row[length - 1] == loader.dataset.vocab.end_index
            assert (row[length:] == loader.dataset.vocab.pad_index).all()
        for image_position, image_id in enumerate(batch.image_ids):
            count = int((batch.image_index == image_position).sum())
            assert count == len(coco.imgToAnns[image_id])  # all of an image's captions travel with it
            seen[image_id] += 1
    assert set(seen) == set(coco.imgs) and set(seen.values()) == {1}


def test_captions_are_tokenized_once_then_read_from_the_cache(synthetic_dir, tmp_path, monkeypatch):
    vocab = Vocabulary.from_annotations([synthetic_dir / "annotations" / "captions_train.json"], 1)
    first = CocoCaptionDataset(synthetic_dir, "train", vocab, cache_dir=tmp_path)
    monkeypatch.setattr(vocabulary, "tokenize", lambda caption: pytest.fail("tokenized again"))
    second = CocoCaptionDataset(synthetic_dir, "train", vocab, cache_dir=tmp_path)
    assert second.captions == first.captions


def test_the_loader_reads_the_tokens_the_vocabulary_was_built_from(synthetic_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    expected = CocoCaptionDataset(synthetic_dir, "train", None, cache_dir=None).captions
    vocab = Vocabulary.from_annotations([data / "annotations" / "captions_train.json"], 1)
    monkeypatch.setattr(vocabulary, "tokenize", lambda caption: pytest.fail("tokenized twice"))
    assert CocoCaptionDataset(data, "train", vocab).captions == expected


def make_odd_images(folder):
    """One image of each awkward kind; returns {file_name: expected_ok}."""
    folder.mkdir(parents=True)
    Image.new("L", (40, 30), 128).save(folder / "gray.jpg")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(folder / "rgba.png")
    Image.new("P", (40, 30), 3).save(folder / "palette.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(folder / "tiny.jpg")
    Image.new("RGB", (200, 150), (0, 200, 0)).save(folder / "good.jpg")
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("this is not an image")
    return {"gray.jpg": True, "cmyk.jpg": True, "rgba.png": True, "palette.png": True, "tiny.jpg": True,
            "good.jpg": True, "truncated.jpg": False, "text.jpg": False, "missing.jpg": False}


def test_load_image_converts_modes_and_reports_bad_files(tmp_path):
    expected = make_odd_images(tmp_path / "images")
    for name, ok in expected.items():
        if ok:
            image = load_image(tmp_path / "images" / name)
            assert image.mode == "RGB"
        else:
            with pytest.raises(ImageLoadError, match=name):
                load_image(tmp_path / "images" / name)
    # A transparent RGBA image is flattened on white, not on the hidden colour.
    assert load_image(tmp_path / "images" / "rgba.png").getpixel((0, 0)) == (255, 255, 255)


def test_loader_skips_and_counts_unreadable_images(tmp_path):
    expected = make_odd_images(tmp_path / "images" / "odd")
    images = [{"id": i, "file_name": name, "width": 1, "height": 1} for i, name in enumerate(expected, 1)]
    annotations = [{"id": i, "image_id": i, "caption": "A red square."} for i in range(1, len(images) + 1)]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_odd.json").write_text(json.dumps({"images": images,
                                                                           "annotations": annotations}))
    vocab = Vocabulary.from_annotations([tmp_path / "annotations" / "captions_odd.json"], threshold=1)
    loader = get_loader(Preprocess(16), mode="train", batch_size=4, data_dir=tmp_path, split="odd", vocab=vocab)
    kept, skipped = [], []
    for batch in loader:
        kept += batch.image_ids
        skipped += batch.skipped_ids
    ok_ids = {i for i, ok in enumerate(expected.values(), 1) if ok}
    assert set(kept) == ok_ids
    assert sorted(skipped) == sorted(set(range(1, len(images) + 1)) - ok_ids)


def test_jpeg_is_decoded_at_reduced_scale_but_never_far_below_the_resize(tmp_path):
    Image.new("RGB", (640, 480), (10, 20, 30)).save(tmp_path / "big.jpg", quality=90)
    image = load_image(tmp_path / "big.jpg", min_side=100)
    assert image.size == (160, 120)  # 1/4 scale: 1/8 would give 60 rows, below 0.9 x 100
    assert load_image(tmp_path / "big.jpg", min_side=256).size == (320, 240)  # 240 >= 0.9 x 256
    assert load_image(tmp_path / "big.jpg", min_side=300).size == (640, 480)  # 240 < 0.9 x 300: full scale
    assert load_image(tmp_path / "big.jpg").size == (640, 480)


def test_preprocess_matches_the_pil_transforms_and_takes_tensors():
    from torchvision import transforms

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    reference = transforms.Compose([transforms.Resize(40, antialias=True), transforms.CenterCrop(32),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = Preprocess(32, 40)(image)
    assert ours.shape == (3, 32, 32) and ours.dtype == torch.float32
    # Resampling on uint8 tensors rounds a little differently from Pillow: within a grey level or two.
    assert (ours - reference(image)).abs().max() < 3 / 255 / min(IMAGENET_STD)
    assert torch.equal(Preprocess(32, 40)(torch.from_numpy(np.array(image)).permute(2, 0, 1)), ours)
    train = Preprocess(32, 40, train=True, random_crop=True, hflip=True)
    assert train(image).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="smaller than the crop"):
        Preprocess(32, 24)


def test_missing_or_empty_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions_nope.json"):
        CocoCaptionDataset(tmp_path, "nope", None)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_empty.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="captions_empty.json"):
        CocoCaptionDataset(tmp_path, "empty", None)
    (tmp_path / "annotations" / "captions_bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="captions_bad.json"):
        CocoCaptionDataset(tmp_path, "bad", None)


def test_caption_less_images_are_left_out_of_training(synthetic_dir, tmp_path):
    shutil.copytree(synthetic_dir, tmp_path / "data")
    path = tmp_path / "data" / "annotations" / "captions_val.json"
    data = json.loads(path.read_text())
    dropped = data["images"][0]["id"]
    data["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] != dropped]
    path.write_text(json.dumps(data))
    vocab = Vocabulary.from_annotations([path], 1)
    dataset = CocoCaptionDataset(tmp_path / "data", "val", vocab)
    assert dropped not in dataset.image_ids and dataset.uncaptioned == [dropped]
    assert dropped in CocoCaptionDataset(tmp_path / "data", "val", None).image_ids  # captioning still covers it


def test_transform_is_deterministic_for_evaluation():
    image = Image.new("RGB", (90, 60), (200, 10, 10))
    transform = Preprocess(32, 36, train=False)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 32, 32) and torch.equal(first, second)


def test_write_json_atomic_leaves_the_old_file_and_no_temp_file_when_it_fails(tmp_path):
    target = tmp_path / "out.json"
    files.write_json_atomic(target, {"kept": 1})
    with pytest.raises(TypeError):
        files.write_json_atomic(target, {"not serialisable": object()})
    assert json.loads(target.read_text()) == {"kept": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("kind", ["16-bit PNG", "float TIFF"])
def test_wide_greyscale_images_keep_their_range(kind, tmp_path):
    ramp = np.linspace(0.0, 1.0, 64 * 256).reshape(64, 256)  # black to white
    if kind == "16-bit PNG":
        path, image = tmp_path / "ramp.png", Image.fromarray((ramp * 65535).astype(np.uint16))
    else:
        path, image = tmp_path / "ramp.tif", Image.fromarray(ramp.astype(np.float32))
    image.save(path)
    grey = np.asarray(load_image(path))[..., 0].astype(float)
    assert abs(grey.mean() - 127.5) < 2 and grey.min() == 0 and grey.max() == 255  # not clipped to white or black


def test_a_pickled_feature_store_reopens_its_file_instead_of_carrying_the_data(tmp_path):
    # A worker started by spawn (macOS, Windows) receives the dataset pickled: a pickled memmap carries every row.
    array = np.random.default_rng(0).standard_normal((2000, 512)).astype(np.float16)  # 2 MB
    np.save(tmp_path / "features.npy", array)
    store = FeatureStore(tmp_path / "features.npy", {"image_ids": list(range(2000)), "missing": [],
                                                      "feature_size": 512})
    pickled = pickle.dumps(store)
    assert len(pickled) < array.nbytes / 20
    copy = pickle.loads(pickled)
    assert torch.equal(copy.get(1234), store.get(1234))


def test_a_loader_with_cached_features_works_with_spawned_workers(synthetic_dir, tmp_path):
    config = tiny_config(synthetic_dir, tmp_path, train_backbone="no", pretrained="no")
    encoder = EncoderCNN(config.embed_size, "resnet18", pretrained="no", train_backbone="no")
    store = feature_store(encoder, config, "val", torch.device("cpu"), cache_dir=tmp_path / "cache", progress=False)
    vocab = get_vocabulary(tmp_path / "vocab.pkl", 1, [annotation_path(synthetic_dir, "train")], False)
    loader = get_loader(None, mode="val", batch_size=4, data_dir=synthetic_dir, split="val", vocab=vocab,
                        features=store)
    assert len(pickle.dumps(loader.dataset)) < 100_000  # no parsed annotation file, no features
    spawned = DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
                         num_workers=1, multiprocessing_context="spawn")
    for ours, theirs in zip(loader, spawned, strict=True):
        assert ours.image_ids == theirs.image_ids
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.captions, theirs.captions)


def test_a_loader_with_captions_needs_their_vocabulary(synthetic_dir):
    with pytest.raises(ValueError, match="vocabulary"):
        get_loader(None, mode="val", data_dir=synthetic_dir, split="val")
