"""What the self-critical reward pays the captions the model itself samples, by how many groups they name.

    python docs/experiments/sample_probe.py <run>/best.pt --data-dir /tmp/hard [--groups 3] [--samples 20]

For the val images with --groups colour-shape groups, draws --samples captions per image from the decoder (as
self-critical training does), and scores each with the reward's formula (metrics.CorpusCider, document frequencies
from the training captions, <end> scored as a word) against the image's references. Prints, by the number of groups
a sample names and how many of them are in the image, the share of samples and their mean reward: whether naming
one more group pays, as the model names it. The greedy caption, which evaluation reports, is also tallied.
"""
import argparse
from collections import defaultdict
from pathlib import Path

import torch

from captioning import metrics  # noqa: E402
from captioning import objects  # noqa: E402
from captioning import pretraining  # noqa: E402
from captioning.annotations import annotation_path, load_coco  # noqa: E402
from captioning.inference import Captioner  # noqa: E402


def words(caption: str) -> str:
    """A caption as the reward scores it: its words without punctuation, then <end>."""
    return " ".join(token for token in objects.tokens_of(caption) if token.isalnum()) + " <end>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--groups", type=int, default=3, help="probe the val images with this many groups")
    parser.add_argument("--samples", type=int, default=20, help="captions sampled per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    captioner, data = Captioner(args.checkpoint, "cpu"), Path(args.data_dir)
    train, val = (load_coco(annotation_path(data, split)) for split in ("train", "val"))
    reward = metrics.CorpusCider([[words(ann["caption"]) for ann in train.imgToAnns[image_id]]
                                  for image_id in train.imgs])
    images = [image for image in pretraining.split_images(data, "val")
              if len(objects.image_objects(image)) == args.groups]
    labels = pretraining.Labels(pretraining.split_images(data, "train"))
    pixels, _, _ = pretraining.load_split(data, "val", images, labels, captioner.config.image_size,
                                               captioner.config.resize_size)
    with torch.no_grad():
        maps = captioner.feature_maps(pixels)
        features = captioner.encoder.project(captioner.encoder.pool(maps, captioner.config.precision))
        sampled, _ = captioner.decoder.sample_with_log_probs(features.repeat_interleave(args.samples, dim=0),
                                                             captioner.config.max_len)
    greedy = captioner.decode_feature_maps(maps)
    sentence = captioner.vocab.clean_sentence
    tallies = {"samples": defaultdict(list), "greedy": defaultdict(list)}
    captions = [("samples", row // args.samples, sentence(ids)) for row, ids in enumerate(sampled.tolist())] + \
        [("greedy", row, sentence(ids)) for row, ids in enumerate(greedy.tolist())]
    for kind, row, caption in captions:
        image = images[row]
        named, present = objects.named_objects(caption), objects.image_objects(image)
        references = [words(ann["caption"]) for ann in val.imgToAnns[image["id"]]]
        right = sum(1 for pair in named if pair in present)
        tallies[kind][len(named), right].append(reward.score(words(caption), references))
    print(f"{len(images)} val images with {args.groups} groups; {args.samples} samples each")
    for kind, tally in tallies.items():
        total = sum(len(rewards) for rewards in tally.values())
        for (named, right), rewards in sorted(tally.items()):
            print(f"  {kind:7}  names {named} groups, {right} in the image: {len(rewards) / total:6.1%} of "
                  f"captions, mean reward {sum(rewards) / len(rewards):.3f}")


if __name__ == "__main__":
    main()
