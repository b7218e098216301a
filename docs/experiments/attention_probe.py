"""Throwaway probe behind docs/EXPERIMENTS.md, 2026-12-02: does a decoder that attends over the CNN's map bind colours
to shapes better than the pooled feature does? Not part of the pipeline; kept so that the figures can be re-measured.

    python docs/experiments/attention_probe.py --data-dir data/synthetic --weights models/encoder_pretrained.pth \
        --variant pooled|att4|att3|att34 --epochs 6

A frozen pretrained ResNet-18 (`pretrain_encoder.py`'s output) gives layer3 (6 x 6) and layer4 (3 x 3) maps at 96 px;
an LSTM decoder (embed 256, hidden 512) is trained with cross-entropy only (Adam 1e-3, cosine, batch 32, gradient
clip 5) and scored each epoch by object precision and recall (objects.py) of its greedy captions on the val split.
pooled: the mean of layer4 is the LSTM's first input (the pipeline's Show and Tell decoder, without the bag-of-words
loss); att4 / att3: soft attention (Show, Attend and Tell, with its gate) over layer4's or layer3's cells, the mean of
the same map as first input; att34: attention over layer3, the mean of layer4 as first input.
"""
import argparse
import collections
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from captioning import objects  # noqa: E402
from data_loader import Preprocess, load_image  # noqa: E402
from captioning.backbone import load_backbone  # noqa: E402
from vocabulary import build_vocabulary  # noqa: E402


def maps_of(data: Path, split: str, weights: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    coco = json.loads((data / "annotations" / f"captions_{split}.json").read_text())
    net, _ = load_backbone("resnet18", "yes", weights)
    net.eval()
    transform, layer3, layer4 = Preprocess(96, 96), [], []
    with torch.no_grad():
        for start in range(0, len(coco["images"]), 64):
            images = torch.stack([transform(load_image(data / "images" / split / image["file_name"], 96))
                                  for image in coco["images"][start:start + 64]])
            x = net.maxpool(net.relu(net.bn1(net.conv1(images.contiguous(memory_format=torch.channels_last)))))
            x = net.layer3(net.layer2(net.layer1(x)))
            layer3.append(x.flatten(2).transpose(1, 2))
            layer4.append(net.layer4(x).flatten(2).transpose(1, 2))
    return coco, torch.cat(layer3), torch.cat(layer4)


class Decoder(nn.Module):
    def __init__(self, variant: str, vocab: int, embed: int = 256, hidden: int = 512) -> None:
        super().__init__()
        self.variant, self.hidden = variant, hidden
        channels = 256 if variant in ("att3", "att34") else 512
        self.init = nn.Linear(512 if variant == "att34" else channels, embed)
        self.embed, self.fc = nn.Embedding(vocab, embed), nn.Linear(hidden, vocab)
        if variant == "pooled":
            self.cell = nn.LSTMCell(embed, hidden)
        else:
            self.keys, self.values = nn.Linear(channels, 256), nn.Linear(channels, embed)
            self.query, self.score, self.gate = nn.Linear(hidden, 256), nn.Linear(256, 1), nn.Linear(hidden, embed)
            self.cell = nn.LSTMCell(2 * embed, hidden)

    def start(self, cells: torch.Tensor, pooled: torch.Tensor):
        zeros = cells.new_zeros(cells.size(0), self.hidden)
        first = self.init(pooled if self.variant == "att34" else cells.mean(1))
        if self.variant == "pooled":
            return self.cell(first, (zeros, zeros)), None
        memory = (self.keys(cells), self.values(cells))
        return self.cell(torch.cat([first, memory[1].mean(1)], 1), (zeros, zeros)), memory

    def step(self, words: torch.Tensor, state, memory):
        inputs = self.embed(words)
        if memory is not None:
            keys, values = memory
            weights = self.score(torch.tanh(keys + self.query(state[0]).unsqueeze(1))).squeeze(-1).softmax(-1)
            context = (weights.unsqueeze(-1) * values).sum(1) * torch.sigmoid(self.gate(state[0]))
            inputs = torch.cat([inputs, context], 1)
        return self.cell(inputs, state)

    def forward(self, cells, pooled, captions):
        state, memory = self.start(cells, pooled)
        hidden = []
        for t in range(captions.size(1) - 1):
            state = self.step(captions[:, t], state, memory)
            hidden.append(state[0])
        return self.fc(torch.stack(hidden, 1))

    @torch.no_grad()
    def greedy(self, cells, pooled, start: int, length: int = 24):
        state, memory = self.start(cells, pooled)
        words, out = torch.full((cells.size(0),), start), []
        for _ in range(length):
            state = self.step(words, state, memory)
            words = self.fc(state[0]).argmax(-1)
            out.append(words)
        return torch.stack(out, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--variant", choices=["pooled", "att4", "att3", "att34"], required=True)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    train, train3, train4 = maps_of(args.data_dir, "train", args.weights)
    val, val3, val4 = maps_of(args.data_dir, "val", args.weights)
    vocab = build_vocabulary([a["caption"] for a in train["annotations"]], 3)
    cells_of = {"pooled": (train4, val4), "att4": (train4, val4)}.get(args.variant, (train3, val3))
    row = {image["id"]: index for index, image in enumerate(train["images"])}
    pairs = [(row[a["image_id"]], vocab.encode(a["caption"])) for a in train["annotations"]]
    model = Decoder(args.variant, len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    steps = args.epochs * math.ceil(len(pairs) / 32)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    started = time.time()
    for epoch in range(args.epochs):
        for batch in torch.randperm(len(pairs)).split(32):
            rows = [pairs[i][0] for i in batch.tolist()]
            captions = nn.utils.rnn.pad_sequence([torch.tensor(pairs[i][1]) for i in batch.tolist()], batch_first=True)
            logits = model(cells_of[0][rows].float(), train4[rows].float().mean(1), captions)
            loss = F.cross_entropy(logits.flatten(0, 1), captions[:, 1:].flatten(), ignore_index=vocab.pad_index)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5)
            optimizer.step()
            schedule.step()
        words = model.greedy(cells_of[1].float(), val4.float().mean(1), vocab.start_index)
        right, named, total, by_count = 0, 0, 0, collections.defaultdict(lambda: [0, 0])
        for image, ids in zip(val["images"], words.tolist()):
            truth = collections.Counter((o["colour"], o["shape"]) for o in image["objects"])
            said = objects.named_objects(vocab.clean_sentence(ids))
            hits = sum((said & truth).values())
            right, named, total = right + hits, named + sum(said.values()), total + sum(truth.values())
            by_count[len(image["objects"])][0] += hits
            by_count[len(image["objects"])][1] += sum(said.values())
        precision = {n: round(h / max(s, 1), 3) for n, (h, s) in sorted(by_count.items())}
        print(f"{args.variant} epoch {epoch + 1}: val object precision {right / max(named, 1):.3f}, recall "
              f"{right / total:.3f}; precision by number of objects {precision} ({time.time() - started:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
