"""A briefly trained model uses the image: its held-out CIDEr beats the best image-blind constant caption.

To train in under a minute on 2 CPU cores, the ResNet-18 is frozen at its random initialisation and the projection
+ LSTM learn from the feature cache (the fast path of issue 5). Random pooled features keep enough colour and layout
to caption from; the demo's recipe, which trains the backbone, does much better (README).
"""
from __future__ import annotations

import synthetic_data
import train
from conftest import tiny_config
from evaluate import evaluate


def test_briefly_trained_model_beats_the_constant_caption_baseline(tmp_path):
    data = tmp_path / "data"
    synthetic_data.generate(data, n_train=1500, n_val=150, n_test=150, seed=5, width=64, height=64)
    config = tiny_config(data, tmp_path / "run", image_size=64, resize_size=64, embed_size=64, hidden_size=128,
                         batch_size=16, epochs=12, lr=5e-3, lr_patience=100, bow_loss_weight=1.0,
                         train_backbone="no", feature_cache="auto")
    train.train(config, progress=False)
    assert list((data / "cache").glob("features_train_*.npy")), "trained from the feature cache"
    report = evaluate(tmp_path / "run" / "best.pt", split="test", progress=False)
    assert report["images"] == 150
    # Measured here: CIDEr 0.73 against 0.32 for the best constant caption.
    assert report["model"]["CIDEr"] > 1.5 * report["baseline"]["CIDEr"], report
