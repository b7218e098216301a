"""A briefly trained model uses the image: its held-out CIDEr beats the best image-blind constant caption, and its
captions name objects that are there.

The recipe's path in small (conftest.seeing_run): the CNN is pretrained on the synthetic objects, then frozen while
the projection + LSTM learn from the feature cache (the fast path of issue 5).
"""
from __future__ import annotations

from evaluate import evaluate


def test_briefly_trained_model_beats_the_constant_caption_baseline(seeing_run):
    data, checkpoint = seeing_run
    assert list((data / "cache").glob("features_train_*.npy")), "trained from the feature cache"
    report = evaluate(checkpoint, split="test", progress=False)
    assert report["images"] == 150
    # Measured on a 2-core Xeon (plain AVX-512), commit 7c0117a: CIDEr 2.11 against 0.48 for the best constant
    # caption (1.68 with the pretraining's earlier cosine schedule).
    assert report["model"]["CIDEr"] > 2 * report["baseline"]["CIDEr"], report
    # Of the colour-shape pairs the captions name, the share in the image: 0.38 measured at 7c0117a (colours right
    # 0.95, shapes 0.51); 0.19, 0.23 and 0.44 with earlier pretraining: runs this small are noisy. A blind model
    # scores about 0.03 (the constant caption names two of the 60 pairs, each in about one image in thirty).
    assert report["objects"]["model"]["precision"] > 0.1, report["objects"]
