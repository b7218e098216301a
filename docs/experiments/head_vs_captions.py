"""The objects the CNN's centre head sees against those the captions name, on one split of a set with instances.

    python docs/experiments/head_vs_captions.py <run>/best.pt --data-dir /tmp/other --split test
    python docs/experiments/head_vs_captions.py <run>/best.pt --data-dir /tmp/other --split train --max-images 500

For a checkpoint with object_features: the head's objects are its probabilities summed over the cells (the counts
the captioner reads in its pooled feature), rounded; the captions are decoded from the same features (beam 3).
Both are scored as objects.py scores a caption (precision, recall, counts included), and of the objects the captions
leave out, how many the head had found: what the decoder loses of what the CNN saw. --max-images stops after the
batch of 64 that reaches it (500 scores 512 images).
"""
import argparse
from collections import Counter

import torch

from captioning import objects, pretraining
from captioning.inference import Captioner
from data_loader import get_loader
from model import decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=3)
    args = parser.parse_args()
    captioner = Captioner(args.checkpoint, "cpu")
    encoder, config = captioner.encoder, captioner.config
    if encoder.objects is None:
        parser.error("the checkpoint has no centre head (object_features)")
    categories = pretraining.Labels(pretraining.SplitObjects(args.data_dir, config.train_split)).categories
    found, vocabulary = objects.split_objects(args.data_dir, args.split)
    loader = get_loader(captioner.transform, mode="test", batch_size=64, data_dir=args.data_dir, split=args.split)
    head, caption = objects.ObjectScore(), objects.ObjectScore()
    missed = missed_seen = images = 0
    for batch in loader:
        with torch.no_grad():
            pooled = encoder.pool(captioner.feature_maps(batch.images), config.precision)
            words = decode(captioner.decoder, encoder.project(pooled), args.beam_size, config.max_len)
        counts = pooled[:, encoder.feature_size - len(categories):encoder.feature_size].float().round().int()
        for image_id, row, ids in zip(batch.image_ids, counts.tolist(), words.tolist()):
            seen = Counter({categories[index]: count for index, count in enumerate(row) if count > 0})
            named = objects.named_objects(captioner.vocab.clean_sentence(ids), vocabulary)
            head.add(seen, found[image_id])
            caption.add(named, found[image_id])
            for category, count in objects.caption_errors(named, found[image_id])["missed"].items():
                missed += count
                missed_seen += min(count, seen[category])
            images += 1
        if args.max_images and images >= args.max_images:
            break
    for name, score in (("centre head", head), ("captions", caption)):
        print(f"{args.split}, {images} images: {name}: precision {score.precision:.3f}, recall {score.recall:.3f}")
    print(f"objects the captions leave out: {missed}, of which the head had found {missed_seen}")


if __name__ == "__main__":
    main()
