"""Why a captioner stops at two groups in an image that has three: what it expects after the first, and what the
reward pays for the third.

    python docs/experiments/list_probe.py <run>/best.pt --data-dir /tmp/hard --split val

Two figures, on the images with three colour-shape groups:
- the decoder's probability of "," and of "and" right after the first group of a reference that lists all three
  ("a black dot, a green rhombus and two red dots ..."), teacher-forced on that reference, mean over the images
  (--images of them): "," goes on to a third group, "and" ends the list at two;
- the CIDEr that self-critical training would pay (idf from the training captions, as train.py's reward) for such a
  reference against the image's other references, for the same sentence in the decoder's wording ("A and B and C"),
  and with its second group left out; then the same with <end> scored as a word, as train.py's reward now does.
"""
import argparse
import re

import torch

from captioning import metrics  # noqa: E402
from captioning import objects  # noqa: E402
import vocabulary  # noqa: E402
from captioning.annotations import annotation_path, image_path, load_coco  # noqa: E402
from data_loader import load_image  # noqa: E402
from captioning.inference import Captioner  # noqa: E402

LIST = re.compile(r"^(?P<head>.*?), (?P<second>.*?) and (?P<rest>.*)$")  # "A, B and C ..."


def reward_text(caption: str, end: bool = False) -> str:
    """A caption as the reward reads it: its words, without punctuation (then "<end>" if end)."""
    words = [token for token in vocabulary.tokenize(caption) if not vocabulary.is_punctuation(token)]
    return " ".join(words + (["<end>"] if end else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()
    captioner = Captioner(args.checkpoint, device="cpu")
    vocab = captioner.vocab
    comma, and_ = vocab(","), vocab("and")
    train = load_coco(annotation_path(args.data_dir, "train"))
    rewards = {end: metrics.CorpusCider([reward_text(a["caption"], end) for a in train.imgToAnns[image_id]]
                                        for image_id in train.imgs) for end in (False, True)}
    coco = load_coco(annotation_path(args.data_dir, args.split))
    p_comma, p_and, paid = [], [], {(end, kind): [] for end in (False, True) for kind in ("three", "and", "two")}
    for image_id, image in coco.imgs.items():
        if len(objects.image_objects(image)) != 3:
            continue
        references = [a["caption"] for a in coco.imgToAnns[image_id]]
        listing = [r for r in references if LIST.match(r.rstrip(".")) and len(objects.named_objects(r)) == 3
                   and len(objects.named_objects(LIST.match(r.rstrip(".")).group("head"))) == 1]
        if not listing:
            continue
        reference = listing[0]
        parts = LIST.match(reference.rstrip("."))
        for end, reward in rewards.items():
            others = [reward_text(r, end) for r in references if r != reference]
            for kind, text in (("three", reference), ("and", f"{parts['head']} and {parts['second']} and "
                                                            f"{parts['rest']}"),
                               ("two", f"{parts['head']} and {parts['rest']}")):
                paid[end, kind].append(reward.score(reward_text(text, end), others))
        if len(p_comma) < args.images:
            ids = [vocab.start_index] + [vocab(token) for token in vocabulary.tokenize(reference)] + [vocab.end_index]
            pixels = captioner.transform(load_image(image_path(args.data_dir, args.split, image["file_name"])))
            with torch.no_grad():
                scores = captioner.decoder(captioner.encoder(pixels.unsqueeze(0)), torch.tensor([ids]))
            probabilities = scores[0].softmax(dim=-1)[ids.index(comma)]  # output t predicts word t
            p_comma.append(probabilities[comma].item())
            p_and.append(probabilities[and_].item())
    print(f"{args.split}: after the first of three groups ({len(p_comma)} references): P(',') "
          f"{sum(p_comma) / len(p_comma):.3f}, P('and') {sum(p_and) / len(p_and):.3f}")
    mean = {key: sum(values) / len(values) for key, values in paid.items()}
    for end in (False, True):
        print(f"reward{' with <end> scored' if end else ''}: a reference naming all three groups "
              f"{mean[end, 'three']:.3f}, in the decoder's wording {mean[end, 'and']:.3f}, with its second group "
              f"left out {mean[end, 'two']:.3f} ({len(paid[end, 'two'])} images)")


if __name__ == "__main__":
    main()
