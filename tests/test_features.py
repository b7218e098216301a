"""Feature cache: built once and reused, rebuilt when its settings change, exact, robust to bad images, atomic."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from captioning import features
from captioning import training
from captioning.training import loop
from captioning.training.run import use_feature_cache
from conftest import tiny_config
from data_loader import Preprocess, get_loader, load_image
from captioning.features import feature_store
from model import EncoderCNN
from vocabulary import Vocabulary

CPU = torch.device("cpu")


def make_encoder(seed: int = 0, attention: bool = False) -> EncoderCNN:
    """A frozen ResNet-18 with random weights fixed by seed."""
    torch.manual_seed(seed)
    return EncoderCNN(32, "resnet18", pretrained="no", train_backbone="no", attention=attention)


def count_backbone_runs(monkeypatch, encoder: EncoderCNN) -> dict[str, int]:
    """Patch the CNN (EncoderCNN.feature_map, the one way it runs) to count how many batches go through it."""
    calls = {"batches": 0}
    real_feature_map = encoder.feature_map

    def counting_feature_map(images, precision="fp32"):
        calls["batches"] += 1
        return real_feature_map(images, precision)
    monkeypatch.setattr(encoder, "feature_map", counting_feature_map)
    return calls


def cache_files(cache_dir) -> list[str]:
    return sorted(path.name for path in cache_dir.iterdir())


def test_cache_is_built_once_then_reused(synthetic_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path / "run")
    encoder = make_encoder()
    calls = count_backbone_runs(monkeypatch, encoder)
    first = feature_store(encoder, config, "val", CPU, cache_dir=tmp_path / "cache", progress=False)
    assert calls["batches"] >= 1 and len(first) == 12
    built = calls["batches"]
    second = feature_store(encoder, config, "val", CPU, cache_dir=tmp_path / "cache", progress=False)
    assert calls["batches"] == built  # read from disk: the backbone did not run again
    for image_id in first.meta["image_ids"]:
        assert torch.equal(first.get(image_id), second.get(image_id))
    assert len(cache_files(tmp_path / "cache")) == 2  # one array, one meta file


@pytest.mark.parametrize("change", ["image_size", "weights"])
def test_cache_made_with_other_settings_is_rebuilt(synthetic_dir, tmp_path, monkeypatch, change):
    config = tiny_config(synthetic_dir, tmp_path / "run")
    encoder = make_encoder(seed=0)
    old = feature_store(encoder, config, "val", CPU, cache_dir=tmp_path / "cache", progress=False)
    if change == "image_size":
        config = config.replace(image_size=40, resize_size=40)
    else:
        encoder = make_encoder(seed=1)  # same architecture, other weights
    calls = count_backbone_runs(monkeypatch, encoder)
    new = feature_store(encoder, config, "val", CPU, cache_dir=tmp_path / "cache", progress=False)
    assert calls["batches"] >= 1  # extracted again, not reused
    assert new.meta["key"] != old.meta["key"]
    assert len(cache_files(tmp_path / "cache")) == 4  # the old cache is left alone, the new one sits beside it
    image_id = old.meta["image_ids"][0]
    assert not torch.allclose(new.get(image_id), old.get(image_id))


@pytest.mark.parametrize("attention", [False, True], ids=["pooled", "attention"])
def test_cached_features_equal_the_encoders_pooled_features(synthetic_dir, tmp_path, attention):
    config = tiny_config(synthetic_dir, tmp_path / "run", precision="fp32", attention=attention)
    encoder = make_encoder(attention=attention).eval()
    if attention:  # the same backbone's pooled cache beside it is not taken for this one
        feature_store(make_encoder().eval(), config, "test", CPU, cache_dir=tmp_path / "cache", progress=False)
    store = feature_store(encoder, config, "test", CPU, cache_dir=tmp_path / "cache", progress=False)
    dataset = get_loader(None, mode="test", data_dir=synthetic_dir, split="test").dataset
    transform = Preprocess(config.image_size, config.resize_size, train=False)
    for image_id in dataset.image_ids:
        image = transform(load_image(dataset.image_file(image_id), min_side=config.resize_size))
        with torch.no_grad():
            expected = encoder.pooled_features(image.unsqueeze(0))[0]  # (feature_size,)
        cached = store.get(image_id)
        assert cached.dtype == torch.float32 and cached.shape == (encoder.features_width(config.image_size),)
        # The cache stores float16: about three significant digits.
        torch.testing.assert_close(cached, expected, rtol=2e-3, atol=1e-3)


def test_unreadable_and_missing_images_are_recorded_and_skipped(synthetic_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_dir, data_dir, ignore=shutil.ignore_patterns("cache"))
    annotations = json.loads((data_dir / "annotations" / "captions_train.json").read_text())
    corrupt, missing = annotations["images"][0], annotations["images"][1]
    (data_dir / "images" / "train" / corrupt["file_name"]).write_bytes(b"\xff\xd8\xff not really a JPEG")
    (data_dir / "images" / "train" / missing["file_name"]).unlink()
    config = tiny_config(data_dir, tmp_path / "run")
    store = feature_store(make_encoder(), config, "train", CPU, progress=False)
    assert sorted(store.meta["missing"]) == sorted([corrupt["id"], missing["id"]])
    assert store.get(corrupt["id"]) is None and store.get(missing["id"]) is None
    assert store.get(annotations["images"][2]["id"]) is not None
    vocab = Vocabulary.from_annotations([data_dir / "annotations" / "captions_train.json"], threshold=1)
    loader = get_loader(None, mode="train", batch_size=8, data_dir=data_dir, split="train", vocab=vocab,
                        features=store)
    seen, skipped = [], []
    for batch in loader:
        seen += batch.image_ids
        skipped += batch.skipped_ids
        assert batch.images.shape == (len(batch.image_ids), 512)
        assert batch.image_index.max().item() < len(batch.image_ids)
    assert sorted(skipped) == sorted([corrupt["id"], missing["id"]])
    assert sorted(seen) == sorted(image["id"] for image in annotations["images"][2:])


def test_frozen_backbone_trains_from_the_cache(synthetic_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"  # a copy, so that the session's dataset gets no feature cache
    shutil.copytree(synthetic_dir, data_dir, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data_dir, tmp_path / "run", train_backbone="no", epochs=1, batch_size=20)
    run = training.build_run(config)
    assert use_feature_cache(run)
    batch = next(iter(loop.make_loader(run, "train", "train")))
    assert batch.images.shape == (len(batch.image_ids), run.encoder.features_width(config.image_size))
    steps = {"count": 0}
    real_step = loop.train_step

    def step_without_backbone(run, batch):
        assert batch.images.dim() == 2  # pooled features, never pixels
        steps["count"] += 1
        return real_step(run, batch)
    monkeypatch.setattr(loop, "train_step", step_without_backbone)
    history = training.train(config, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert steps["count"] == 2  # 40 training images in batches of 20: the whole epoch
    assert len(list((data_dir / "cache").glob("features_train_*.npy"))) == 1
    assert len(list((data_dir / "cache").glob("features_val_*.npy"))) == 1


def test_cache_files_are_written_atomically_meta_last(synthetic_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path / "run")
    cache_dir = tmp_path / "cache"
    encoder = make_encoder()
    written = []
    real_write = features.write_json_atomic

    def record_then_write(path, data):
        written.append((path.name, cache_files(cache_dir)))
        real_write(path, data)
    monkeypatch.setattr(features, "write_json_atomic", record_then_write)
    feature_store(encoder, config, "val", CPU, cache_dir=cache_dir, progress=False)
    (meta_name, files_then), = written
    assert meta_name.startswith("features_val_") and meta_name.endswith(".json")
    assert files_then == [meta_name.replace(".json", ".npy")]  # the complete array existed before the meta file
    assert cache_files(cache_dir) == sorted([meta_name, meta_name.replace(".json", ".npy")])  # no .tmp left
    np.testing.assert_array_equal(np.load(cache_dir / meta_name.replace(".json", ".npy")).shape,
                                  (12, encoder.feature_size))


def test_interrupted_cache_writes_leave_nothing_half_done(synthetic_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path / "run")
    cache_dir = tmp_path / "cache"
    encoder = make_encoder()

    def failing_save(file, array):
        file.write(b"half an array")
        raise OSError("disk full")
    monkeypatch.setattr(features.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        feature_store(encoder, config, "val", CPU, cache_dir=cache_dir, progress=False)
    assert not cache_dir.exists() or cache_files(cache_dir) == []  # no partial array, no .tmp
    monkeypatch.undo()

    # The array written but not the meta file (a crash in between): the array is not trusted, it is rebuilt.
    monkeypatch.setattr(features, "write_json_atomic", lambda path, data: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError, match="crash"):
        feature_store(encoder, config, "val", CPU, cache_dir=cache_dir, progress=False)
    assert [name for name in cache_files(cache_dir) if name.endswith(".json")] == []
    monkeypatch.undo()
    calls = count_backbone_runs(monkeypatch, encoder)
    store = feature_store(encoder, config, "val", CPU, cache_dir=cache_dir, progress=False)
    assert calls["batches"] >= 1 and len(store) == 12
    assert not [name for name in cache_files(cache_dir) if name.endswith(".tmp")]


def test_a_read_only_data_folder_gets_its_cache_in_the_run_folder(synthetic_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_dir, data_dir, ignore=shutil.ignore_patterns("cache"))
    config = tiny_config(data_dir, tmp_path / "run")
    writable = features.writable
    # Tests run as root, which may write anywhere: the data folder is made to look read-only instead.
    monkeypatch.setattr(features, "writable", lambda folder: folder != data_dir / "cache" and writable(folder))
    with pytest.warns(UserWarning, match="not writable"):
        store = feature_store(make_encoder(), config, "val", CPU, progress=False)
    assert store.path.parent == tmp_path / "run" / "cache" and len(store) == 12
    # Found there the next time, without extracting again.
    monkeypatch.setattr(features, "extract_features", lambda *args, **kwargs: pytest.fail("extracted again"))
    assert feature_store(make_encoder(), config, "val", CPU, progress=False).path == store.path


@pytest.mark.parametrize("damage", ["truncated array", "garbled meta", "meta cut short"])
def test_a_damaged_cache_is_named_and_extracted_again(damage, synthetic_dir, tmp_path):
    config, encoder, cache = tiny_config(synthetic_dir, tmp_path / "run"), make_encoder(), tmp_path / "cache"
    first = feature_store(encoder, config, "val", CPU, cache_dir=cache, progress=False)
    expected = {image_id: first.get(image_id) for image_id in first.meta["image_ids"]}
    array, meta = first.path, first.path.with_suffix(".json")
    del first
    if damage == "truncated array":
        array.write_bytes(array.read_bytes()[:-1000])
    elif damage == "garbled meta":
        meta.write_text("{not json")
    else:
        meta.write_text(meta.read_text()[:-40] + "}")
    with pytest.warns(UserWarning, match="is damaged"):
        again = feature_store(encoder, config, "val", CPU, cache_dir=cache, progress=False)
    assert all(torch.equal(again.get(image_id), value) for image_id, value in expected.items())
