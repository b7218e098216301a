"""What the named colour-shape pairs that are not in the image got wrong, and object precision by number of objects.

    python evaluate.py --checkpoint <run>/best.pt --split test --beam-size 3 --out results.json
    python docs/experiments/object_errors.py results.json --data-dir /tmp/hard --split test

Each named pair beyond what the image has (objects.py reads the captions as evaluate.py does) is one of: a pair the
image has, named more times than it has it; a colour and a shape that are both in the image, but not together; a
shape that is not in the image; a colour that is not in the image. Then how many times the captions named the pairs
that the image has once, twice and three times, and how many of its colour-shape groups a caption names, by the
number of groups in the image. Last, the image's objects the captions leave out (what recall misses): in groups the
caption does not name at all, by the group's size and the image's number of groups, or in groups it names with too
small a count.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

from captioning import objects  # noqa: E402


def pairs(counts: Counter) -> Counter:
    """The categories of a synthetic set ("<colour> <shape>", instances_<split>.json) as (colour, shape) pairs."""
    return Counter({tuple(name.rsplit(" ", 1)): count for name, count in counts.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a COCO results file written by evaluate.py --out")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    found, vocabulary = objects.split_objects(args.data_dir, args.split)
    kinds, named_by_size, matched_by_size, counts, groups = Counter(), Counter(), Counter(), Counter(), Counter()
    missed = Counter()
    for result in json.loads(Path(args.results).read_text()):
        truth = pairs(found[result["image_id"]].counts)
        colours, shapes = {colour for colour, _ in truth}, {shape for _, shape in truth}
        size = min(sum(truth.values()), 4)
        named = pairs(objects.named_objects(result["caption"], vocabulary))
        groups[len(truth), len(named)] += 1
        for pair, present in truth.items():
            if not named[pair]:
                missed[f"in groups of {present} not named, in images with {len(truth)} groups"] += present
            elif named[pair] < present:
                missed[f"in groups of {present} named as {named[pair]}"] += present - named[pair]
        for (colour, shape), count in named.items():
            present = truth.get((colour, shape), 0)
            named_by_size[size] += count
            matched_by_size[size] += min(count, present)
            if present:
                counts[present, count] += 1
            extra = count - min(count, present)
            if not extra:
                continue
            if present:
                kinds["pair in the image, named more times than it has it"] += extra
            elif colour not in colours:
                kinds["colour not in the image"] += extra
            elif shape not in shapes:
                kinds["shape not in the image"] += extra
            else:
                kinds["colour and shape in the image, not together"] += extra
    print(f"{sum(kinds.values())} named pairs not in the image:")
    for kind, count in kinds.most_common():
        print(f"  {count:5d}  {kind}")
    for size in sorted(named_by_size):
        label = f"{size}+" if size == 4 else str(size)
        print(f"objects in the image {label}: precision {matched_by_size[size] / named_by_size[size]:.3f} "
              f"({named_by_size[size]} named)")
    for present in sorted({present for present, _ in counts}):
        named = [f"{count}: {number}" for (had, count), number in sorted(counts.items()) if had == present]
        print(f"pairs the image has {present} times, named (times: pairs) {', '.join(named)}")
    for there in sorted({there for there, _ in groups}):
        named = [f"{count}: {number}" for (had, count), number in sorted(groups.items()) if had == there]
        print(f"images with {there} colour-shape groups, captions naming (groups: captions) {', '.join(named)}")
    print(f"{sum(missed.values())} objects in the images left out:")
    for kind, count in missed.most_common():
        print(f"  {count:5d}  {kind}")


if __name__ == "__main__":
    main()
