"""What the CNN's centre head sees by itself: its objects scored as evaluate.py scores a caption's.

    python pretrain_encoder.py --data-dir /tmp/hard --epochs 9 --centres --save /tmp/cnn.pth
    python docs/experiments/centre_head_probe.py /tmp/cnn.pth --data-dir /tmp/hard --split val

(or a run's `encoder_pretrained.pth`, when its recipe has object_features). For each image the head's cells are read
as a list of objects: a cell whose most likely class is a pair is one object of that pair. Scored against the
generator's objects with counts, like objects.py: precision (named objects that are in the image) and recall (the
image's objects named); then how many times the head found the pairs that the image has once, twice and three
times, and how many cells with an object's centre it named right. The head sees the images as the captioner does
(resized and centre-cropped to --image-size).
"""
import argparse
from collections import Counter

import torch

from captioning import pretraining  # noqa: E402
from captioning.backbone import load_backbone, object_head_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a weights file with a centre head (pretrain_encoder.py --centres)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    labels = pretraining.Labels(pretraining.split_images(args.data_dir, "train"))  # as pretrained
    images = pretraining.split_images(args.data_dir, args.split)
    pixels, _, _ = pretraining.load_split(args.data_dir, args.split, images, labels, args.image_size)
    resnet, _ = load_backbone(args.backbone, "yes", args.weights)
    head_weights = object_head_of(args.weights)
    head = torch.nn.Conv2d(head_weights["weight"].shape[1], head_weights["weight"].shape[0], kernel_size=1)
    head.load_state_dict(head_weights)
    layer3 = torch.nn.Sequential(*list(resnet.children())[:-3]).eval()  # up to and including layer3
    with torch.no_grad():
        found = torch.cat([head(layer3(chunk)).argmax(dim=1) for chunk in pixels.split(100)])  # (N, grid, grid)
    truth = pretraining.centre_targets(images, labels, args.image_size, args.image_size, found.size(1))
    named = matched = total = 0
    counts: Counter[tuple[int, int]] = Counter()
    for row, image in enumerate(images):
        seen = Counter(found[row].flatten().tolist())
        seen.pop(0, None)  # class 0: no centre in that cell
        there = Counter(labels.pair(obj) for obj in image["objects"])
        named += sum(seen.values())
        total += sum(there.values())
        matched += sum(min(count, there[pair]) for pair, count in seen.items())
        counts.update((count, seen.get(pair, 0)) for pair, count in there.items())
    print(f"{args.split}: {len(images)} images; the centre head's objects: precision {matched / named:.3f}, "
          f"recall {matched / total:.3f} ({named} named, {total} in the images)")
    for present in sorted({present for present, _ in counts}):
        found_times = {times: number for (had, times), number in counts.items() if had == present}
        print(f"pairs the image has {present} times, found (times: pairs) "
              + ", ".join(f"{times}: {found_times[times]}" for times in sorted(found_times)))
    centres = truth > 0
    print(f"cells with an object's centre named right: {(found == truth)[centres].float().mean().item():.3f} of "
          f"{int(centres.sum())}; cells without one called a centre: {int(((found > 0) & ~centres).sum())}")


if __name__ == "__main__":
    main()
