"""How many objects of each colour-shape pair the CNN's centre head reads in the val images, against the truth.

    python docs/experiments/count_probe.py <run>/best.pt --data-dir /tmp/hard

The captioner's count features (model.EncoderCNN.pool) sum the head's per-cell probabilities of each pair (soft);
counting the cells whose likeliest class is the pair (hard) is the other reading. For each true count (0 = pairs
the image does not have), the mean reading and how often it rounds to the truth (3 or more as 3).

With --results (evaluate.py --out on the same split), also the soft reading of the image's groups that the captions
name and of those they leave out, by the image's number of groups: does the head see what the caption leaves out?
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from captioning import objects  # noqa: E402
from captioning import pretraining  # noqa: E402
from captioning.inference import Captioner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint whose encoder reads the centre head (object_features)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--results", help="captions of the split's images (evaluate.py --out)")
    args = parser.parse_args()
    captioner, data = Captioner(args.checkpoint, "cpu"), Path(args.data_dir)
    encoder = captioner.encoder
    if encoder.objects is None:
        sys.exit(f"{args.checkpoint} reads no centre head")
    labels = pretraining.Labels(pretraining.split_images(data, "train"))
    names = labels.names[labels.span("pairs")]
    images = pretraining.split_images(data, args.split)
    pixels, _, _ = pretraining.load_split(data, args.split, images, labels, captioner.config.image_size,
                                               captioner.config.resize_size)
    with torch.no_grad():
        maps = torch.cat([encoder.feature_map(pixels[i:i + 64]) for i in range(0, len(pixels), 64)])
        found = encoder.objects(maps).float().softmax(dim=1).flatten(2)  # (images, classes, cells)
    likeliest = found.argmax(dim=1)
    readings = {"soft": found[:, 1:].sum(dim=-1),
                "hard": torch.stack([(likeliest == k).sum(-1) for k in range(1, found.shape[1])], 1).float()}
    values = defaultdict(list)
    for row, image in enumerate(images):
        truth = defaultdict(int)
        for obj in image["objects"]:
            truth[f"{obj['colour']} {obj['shape']}"] += 1
        for k, name in enumerate(names):
            for kind, reading in readings.items():
                values[kind, min(truth[name], 3)].append(reading[row, k].item())
    print(f"{len(images)} images of {args.split}: reading of each pair's count, by its true count")
    for kind, count in sorted(values):
        value = torch.tensor(values[kind, count])
        right = (value.round().clamp(max=3) == count).float().mean()
        print(f"  {kind}  true {count}{'+' if count == 3 else ' '}  mean {value.mean():.2f}  rounds right "
              f"{right:.3f}  ({len(value)} pairs)")
    if args.results:
        captions = {result["image_id"]: result["caption"] for result in json.loads(Path(args.results).read_text())}
        seen = defaultdict(list)
        for row, image in enumerate(images):
            named = objects.named_objects(captions[image["id"]])
            truth = objects.image_objects(image)
            for colour, shape in truth:
                key = "named" if named[colour, shape] else "left out", len(truth)
                seen[key].append(readings["soft"][row, names.index(f"{colour} {shape}")].item())
        print("groups the captions name or leave out: the head's soft reading of them")
        for (kind, groups), values in sorted(seen.items()):
            value = torch.tensor(values)
            print(f"  {kind:8}  images with {groups} groups: mean {value.mean():.2f}, at least 0.5 for "
                  f"{(value >= 0.5).float().mean():.0%}  ({len(value)} groups)")


if __name__ == "__main__":
    main()
