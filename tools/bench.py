"""Benchmark: each speed-up of the pipeline measured against the original way, side by side, on the same data.

    python tools/bench.py                      # a few minutes on a 2-core CPU
    python tools/bench.py --quick              # tiny sizes, a smoke test of under a minute
    python tools/bench.py --device cuda --data-dir data/bench
    python tools/bench.py --write-doc          # also writes its output to docs/bench/<the CPU's flags>.txt

It first measures the machine's own large matrix-product rate (fp32, and bf16 where the CPU computes it natively)
and prints the CPU's capability (AVX2, AVX-512, AVX512-BF16, AMX; held to AVX2 by ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS, or not). Each stage's rate is then printed as FLOP/s (counted with
torch.utils.flop_counter on one call) and as a share of that matrix-product rate in the stage's precision, as soon as
the stage is timed. Where bf16 is emulated (no AVX512-BF16 or AMX), it is timed once, briefly, in section 6.

It writes a COCO-like synthetic set (640x480 JPEGs) to a temporary folder (or --data-dir, kept), then times:
1. training (captions/s): projection + decoder from cached ResNet-50 features vs the original's step, where the
   frozen ResNet-50 runs in fp32 on one image per caption every step, images decoded with plain Pillow;
2. feature extraction (images/s): fp32 NCHW (the original), fp32 + channels_last, bf16 autocast (CUDA: AMP) and
   bf16 weights, side by side, the way `precision auto` picks marked;
3. image loading + preprocessing (images/s): load_image's JPEG draft mode + Preprocess on uint8 tensors vs a
   full-size Pillow decode + torchvision's PIL transforms, with each way's difference from the original pixels;
4. captioning (images/s): batched greedy vs one image at a time, and batched beam search, decoder only;
5. loader start-up: the token cache warm vs tokenizing every caption again;
6. one training step of the demo recipe (configs/demo.json: its CNN trained from scratch at 96 px): fp32 vs bf16
   autocast, the one `precision auto` picks marked, and the same step with a ResNet-50 when the recipe's CNN is another;
7. one self-critical step (sampled captions, CIDEr rewards, the decoder's backward) from the feature cache.
Old and new ways are timed in alternating rounds and the median round is reported, so a change in machine load
hits both alike. The last line printed is one JSON object of the figures (ratios are new/old: higher is better).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from tools import cpu_capability
from captioning import pretraining
from prepare import synthetic
from prepare.synthetic import easy
from captioning import training
from captioning.training import loop, losses, self_critical
from captioning.annotations import annotation_path, load_coco
from captioning.config import Config, make_config
from data_loader import IMAGENET_MEAN, IMAGENET_STD, CocoCaptionDataset, Preprocess, get_loader, load_image
from captioning.files import atomic_write, check_file, write_json_atomic
from captioning.features import EXTRACT_BATCH, FeatureStore, feature_store
from captioning.backbone import layer3_side
from model import DecoderRNN, build_decoder
from captioning.runtime import autocast_dtype, choose_precision, resolve_device
from vocabulary import Vocabulary, build_vocabulary


COCO_TRAIN_CAPTIONS = 414_113  # captions in captions_train2014.json
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "demo.json"  # the demo's recipe (section 6)
DOCS_BENCH = Path(__file__).resolve().parents[1] / "docs" / "bench"  # --write-doc's folder


@dataclass
class BenchSettings:
    """Sizes of one benchmark run; the defaults take a few minutes on a 2-core CPU."""

    images: int = 96  # synthetic training images
    width: int = 640  # COCO images are about 640x480
    height: int = 480
    image_size: int = 224  # crop fed to ResNet-50
    resize_size: int = 256  # shorter side before the crop
    batch_size: int = 16  # images per training batch (five captions each)
    extract_batch: int = EXTRACT_BATCH  # images per encoder batch, as features.py extracts them
    caption_batch: int = 32  # images per batched captioning call
    single_images: int = 16  # images captioned one at a time (the slow way needs fewer to time)
    vocab_size: int = 10_000  # output layer padded to COCO's size (~10k words at threshold 5); 0 = synthetic words
    token_captions: int = 25_000  # captions in the loader start-up test (COCO train2014 has 414,113)
    rounds: int = 5  # timed rounds of each way; the median is reported
    round_seconds: float = 1.0  # a round repeats its work until this much time has passed
    warmup: int = 1  # untimed calls of each way first (allocator, oneDNN/cuDNN kernel choice)
    max_len: int = 20  # longest generated caption
    beam_size: int = 3
    recipe_image_size: int = 0  # training-step section: 0 = the demo recipe's image size and batch
    recipe_batch_size: int = 0
    matmul_size: int = 2048  # the matrix product whose rate each stage is a share of
    emulated_steps: int = 2  # timed steps of emulated bf16 (one untimed first), in a batch 1/8 of the recipe's
    scst_samples: int = 5  # captions sampled per image in the self-critical step (config.scst_samples)

    @classmethod
    def quick(cls) -> "BenchSettings":
        """Tiny sizes: checks that every part runs, in seconds; the figures mean little."""
        return cls(images=8, width=320, height=240, image_size=112, resize_size=128, batch_size=4, extract_batch=8,
                   caption_batch=8, single_images=4, vocab_size=1000, token_captions=500, rounds=2,
                   round_seconds=0.05, recipe_image_size=32, recipe_batch_size=4, matmul_size=1024,
                   emulated_steps=1, scst_samples=2)


@dataclass
class Row:
    """One line of the results table."""

    section: str
    way: str
    rate: float
    unit: str
    speedup: float | None = None  # vs the section's old way
    note: str = ""
    flops: float | None = None  # FLOP/s (matrix products and convolutions)
    share: float | None = None  # of the large matrix product's rate in the way's precision


# ------------------------------------------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(work: dict[str, Callable[[], int]], settings: BenchSettings, device: torch.device,
            warmup: int | None = None, flops: dict[str, float] | None = None) -> dict[str, float]:
    """Median items/s of each way; ways alternate round by round so that a change in load hits all of them alike.

    Each callable does one unit of work and returns how many items (images, captions) it processed. Given `flops`,
    the first warm-up call of each way is counted, and flops[way] set to its FLOPs per item.
    """
    for name, function in work.items():
        for index in range(settings.warmup if warmup is None else warmup):
            if flops is not None and index == 0:
                with cpu_capability.flop_counter() as counter:
                    items = function()
                flops[name] = counter.get_total_flops() / max(items, 1)
            else:
                function()
    synchronize(device)
    rates: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(settings.rounds):
        for name, function in work.items():
            items, started = 0, time.perf_counter()
            while True:
                items += function()
                synchronize(device)
                elapsed = time.perf_counter() - started
                if elapsed >= settings.round_seconds:
                    break
            rates[name].append(items / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def endless(loader: DataLoader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def precision_name(dtype: torch.dtype | None) -> str:
    """bf16 / fp16 / fp32 for an autocast dtype (None = no autocast)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def say(message: str) -> None:
    """Progress on stderr, so that stdout holds only the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


def bench_precision(device: torch.device) -> str:
    """The precision the pipeline's stages are timed in: precision auto's pick, except that a CPU runs bf16 only
    where cpu_capability finds it native in this process (runtime's pick reads the flags and misses a hold to AVX2)."""
    if device.type == "cpu":
        return "bf16" if cpu_capability.capability().native_bf16 else "fp32"
    return choose_precision(device, "auto")[0]


def reduced_native(device: torch.device) -> bool:
    """Whether this device computes its reduced precision (bf16; CUDA: AMP's) in hardware, so bench times it fully."""
    return device.type != "cpu" or cpu_capability.capability().native_bf16


def bench_matmul(settings: BenchSettings, device: torch.device) -> dict[str, float]:
    """The large matrix product's FLOP/s in fp32 and in the reduced precision; an emulated bf16 is measured once,
    on a product an eighth the size, within a few seconds."""
    reduced = "bf16" if device.type == "cpu" else precision_name(autocast_dtype(device, "auto"))
    rates = {"fp32": cpu_capability.matmul_rate(torch.float32, settings.matmul_size, device=device)}
    if reduced_native(device):
        rates[reduced] = cpu_capability.matmul_rate(PRECISIONS[reduced], settings.matmul_size, device=device)
    else:
        rates[reduced] = cpu_capability.matmul_rate(torch.bfloat16, settings.matmul_size // 4, repeats=1,
                                                    seconds=5.0, device=device)
    return rates


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rated(row: Row, items_per_second: float, flops_per_item: float | None, precision: str,
          matmul: dict[str, float]) -> Row:
    """The row with its FLOP/s and their share of the matrix product's rate in `precision` (nothing counted: none)."""
    if flops_per_item:
        row.flops = items_per_second * flops_per_item
        row.share = row.flops / matmul[precision] if precision in matmul else None
    return row


# ---------------------------------------------------------------------------------------------------- set-up


def bench_config(settings: BenchSettings, data_dir: Path, work: Path, device: str, pretrained: str) -> Config:
    """The product's model (ResNet-50, embed 256, LSTM 512) with a frozen backbone, sized by the settings, in the
    precision bench_precision picks."""
    return Config(data_dir=str(data_dir), train_split="train", val_split="train", backbone="resnet50",
                  pretrained=pretrained, train_backbone="no", image_size=settings.image_size,
                  resize_size=settings.resize_size, batch_size=settings.batch_size, vocab_threshold=1,
                  max_len=settings.max_len, precision=bench_precision(torch.device(device)),
                  device=device, out=str(work / "run")).validate()


def padded_vocabulary(config: Config, size: int) -> Vocabulary:
    """The synthetic captions' vocabulary, padded with unused words to `size` so the output layer is COCO-sized."""
    annotations = load_coco(annotation_path(config.data_dir, config.train_split)).dataset["annotations"]
    vocab = build_vocabulary([annotation["caption"] for annotation in annotations], config.vocab_threshold)
    for index in range(len(vocab), size):
        vocab.add_word(f"<unused{index}>")
    return vocab


def write_caption_only_split(directory: Path, count: int, seed: int = 0) -> str:
    """A split of `count` synthetic captions (five per image) without image files: enough to build the dataset."""
    images, annotations = [], []
    for index in range(math.ceil(count / 5)):
        rng = np.random.default_rng([seed, 7, index])
        scene = easy.sample_scene(rng, 640, 480)
        images.append({"id": index + 1, "file_name": f"{index + 1:06d}.jpg", "width": 640, "height": 480})
        for caption in easy.caption_scene(rng, scene)[:count - len(annotations)]:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "caption": caption})
    write_json_atomic(directory / "annotations" / "captions_tokens.json",
                      {"images": images, "annotations": annotations})
    return "tokens"


# -------------------------------------------------------------------------------------------------- sections


def original_train_step(run: training.Run, batch) -> None:
    """The original step: a batch of (image, caption) pairs, so the frozen ResNet-50 runs in fp32 (no autocast, no
    channels_last) on one image per caption, every step.

    Kinder to the original than it was: the loader here decodes each image once for its five captions (the
    original decodes it again for every caption), and the decoder skips padding as the new way does.
    """
    per_caption = dataclasses.replace(batch, images=batch.images[batch.image_index],  # (captions, 3, H, W)
                                      image_index=torch.arange(batch.captions.size(0), device=batch.images.device))
    features = run.encoder.project(run.encoder.backbone(per_caption.images).flatten(1))  # (captions, embed), NCHW
    loss, _ = losses.caption_loss(run, per_caption, features)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in run.optimizer.param_groups for p in group["params"]],
                                   run.config.grad_clip)
    run.optimizer.step()


def bench_training(settings: BenchSettings, config: Config, vocab: Vocabulary, device: torch.device, work: Path,
                   matmul: dict[str, float]) -> tuple[list[Row], dict, training.Run, FeatureStore]:
    """Training captions/s: from the feature cache vs the encoder in the loop. Returns the new run and its cache."""
    new_run = training.build_run(config, vocab)
    started = time.perf_counter()
    store = feature_store(new_run.encoder, config, config.train_split, device, cache_dir=work / "features",
                          progress=False)
    synchronize(device)
    build_seconds = time.perf_counter() - started
    new_loader = get_loader(None, mode="train", batch_size=config.batch_size, data_dir=config.data_dir,
                            split=config.train_split, vocab=vocab, features=store, seed=config.seed,
                            pin_memory=device.type == "cuda")
    old_run = training.build_run(config.replace(feature_cache="off", precision="fp32"), vocab)
    old_run.encoder.to(memory_format=torch.contiguous_format)
    transform = original_transform(config.image_size, config.resize_size, train=True,
                                   random_crop=config.random_crop, hflip=config.hflip)
    # A plain function hides the Resize from load_image, so it decodes at full size like the original loader.
    old_loader = get_loader(lambda image: transform(image), mode="train", batch_size=config.batch_size,
                            data_dir=config.data_dir, split=config.train_split, vocab=vocab, seed=config.seed,
                            pin_memory=device.type == "cuda")
    new_batches, old_batches = endless(new_loader), endless(old_loader)
    for run in (new_run, old_run):
        run.encoder.train()  # frozen BatchNorm stays in eval mode (EncoderCNN.train)
        run.decoder.train()

    def new_step() -> int:
        batch = next(new_batches).to(device, non_blocking=True)
        loop.train_step(new_run, batch)
        return 0 if batch.captions is None else batch.captions.size(0)

    def old_step() -> int:
        batch = next(old_batches).to(device, non_blocking=True)
        original_train_step(old_run, batch)
        return 0 if batch.captions is None else batch.captions.size(0)

    flops: dict[str, float] = {}
    rates = compare({"old": old_step, "new": new_step}, settings, device, flops=flops)
    captions = sum(new_loader.dataset.caption_counts())
    first_epoch = captions / (build_seconds + captions / rates["new"])  # the cache built within the first epoch
    dtype = precision_name(autocast_dtype(device, config.precision))
    rows = [rated(Row("1 training", "original: ResNet-50 fp32 per caption + Pillow", rates["old"], "captions/s"),
                  rates["old"], flops["old"], "fp32", matmul),
            rated(Row("", f"feature cache: projection + decoder, {config.precision}", rates["new"], "captions/s",
                      rates["new"] / rates["old"], "the captioner's step"),
                  rates["new"], flops["new"], config.precision, matmul),
            Row("", f"building the cache ({len(store)} images, {dtype})", len(store) / build_seconds,
                "images/s", note="once per split and backbone"),
            Row("", "first epoch including the cache build", first_epoch, "captions/s", first_epoch / rates["old"],
                note=f"{captions} captions; longer epochs amortise more"),
            Row("", "-> one COCO train2014 epoch from the cache", COCO_TRAIN_CAPTIONS / rates["new"], "s",
                note=f"{COCO_TRAIN_CAPTIONS:,} captions at the cache rate; the original way: "
                     f"{COCO_TRAIN_CAPTIONS / rates['old'] / 3600:.1f} h")]
    figures = {"coco_epoch_seconds_cache": COCO_TRAIN_CAPTIONS / rates["new"],
               "coco_epoch_seconds_original": COCO_TRAIN_CAPTIONS / rates["old"],
               "train_cache_speedup": rates["new"] / rates["old"], "train_captions_per_s_old": rates["old"],
               "train_captions_per_s_new": rates["new"], "cache_build_images_per_s": len(store) / build_seconds,
               "share_captioner_step": rows[1].share}
    return rows, figures, new_run, store


def precision_ways(device: torch.device) -> dict[str, tuple[torch.dtype | None, bool, bool]]:
    """The ways of running the ResNet that bench times: name -> (autocast dtype, bf16 weights, channels_last).

    The first is the original (fp32, NCHW); precision auto runs the pipeline's own way, channels_last with the
    dtype runtime.autocast_dtype picks.
    """
    reduced = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    name = precision_name(reduced)
    return {"fp32, NCHW": (None, False, False), "fp32 + channels_last": (None, False, True),
            f"{name} autocast + channels_last": (reduced, False, True),
            f"{name} weights + channels_last": (reduced, True, True)}


def auto_way(device: torch.device, ways: dict[str, tuple[torch.dtype | None, bool, bool]]) -> str:
    """The name of the way that precision auto runs on this device (as bench_precision sees it)."""
    dtype = autocast_dtype(device, bench_precision(device))
    return next(name for name, (autocast, weights, channels_last) in ways.items()
                if autocast is dtype and not weights and channels_last)


def bench_encoder(settings: BenchSettings, config: Config, run: training.Run, device: torch.device,
                  matmul: dict[str, float]) -> tuple[list[Row], dict]:
    """Feature extraction images/s in each precision and layout, the one precision auto picks marked, and whether
    the captions stay the same in bf16. Where bf16 is emulated, only the fp32 ways (section 6 times bf16 once).

    Batches are as large as features.extract_features makes them (settings.extract_batch), not training batches.
    """
    loader = get_loader(Preprocess(config.image_size, config.resize_size), mode="test",
                        batch_size=settings.extract_batch, data_dir=config.data_dir, split=config.train_split)
    images = next(iter(loader)).images.to(device)  # (batch, 3, image_size, image_size)
    encoder = run.encoder.eval()
    ways = precision_ways(device)
    outputs: dict[str, torch.Tensor] = {}

    def timed(name: str, autocast: torch.dtype | None, weights: bool, channels_last: bool) -> Callable[[], int]:
        model = copy.deepcopy(encoder).to(memory_format=torch.channels_last if channels_last
                                          else torch.contiguous_format)
        inputs = images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        if weights:
            model, inputs = model.to(autocast), inputs.to(autocast)
        context = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast and not weights \
            else contextlib.nullcontext

        @torch.no_grad()
        def run_once() -> int:
            with context():
                outputs[name] = model.backbone(inputs).flatten(1)  # the layout and dtype as set up here
            return images.size(0)
        return run_once

    if not reduced_native(device):
        ways = {name: way for name, way in ways.items() if way[0] is None}
    flops: dict[str, float] = {}
    rates = compare({name: timed(name, *way) for name, way in ways.items()}, settings, device, flops=flops)
    auto, fastest = auto_way(device, ways), max(rates, key=rates.get)
    rows = [rated(Row("2 encoder" if index == 0 else "", f"ResNet-50 {name}" + (" (auto)" if name == auto else ""),
                      rates[name], "images/s", None if index == 0 else rates[name] / rates[list(ways)[0]],
                      "; ".join(note for note, present in (("fastest", name == fastest),
                                                           ("inference", name == auto)) if present)),
                  rates[name], flops[name], precision_name(ways[name][0]), matmul)
            for index, name in enumerate(ways)]
    figures = {"encoder_auto": auto, "encoder_fastest": fastest,
               "encoder_auto_vs_fastest": rates[auto] / rates[fastest],
               "encoder_auto_speedup": rates[auto] / rates[list(ways)[0]],
               "encoder_images_per_s": rates, "encoder_dtype": precision_name(autocast_dtype(device, config.precision)),
               "share_encoder_inference": rows[list(ways).index(auto)].share}
    if len(ways) < 3:
        return rows + [Row("", "bf16 ways not timed: emulated on this CPU", math.nan, "",
                           note="section 6 times an emulated bf16 step once")], figures
    original, bf16_autocast = list(ways)[0], list(ways)[2]
    reference, reduced = outputs[original].float(), outputs[bf16_autocast].float()
    cosine = torch.nn.functional.cosine_similarity(reference, reduced, dim=1)  # (batch,)
    # Features of different images share a large common part (especially with random weights); without it the
    # cosine measures whether what tells the images apart survives the lower precision.
    mean = reference.mean(dim=0, keepdim=True)
    centred = torch.nn.functional.cosine_similarity(reference - mean, reduced - mean, dim=1)  # (batch,)
    torch.manual_seed(config.seed + 1)
    untrained = build_decoder(config, run.vocab).to(device)  # random logits: its argmax flips at the least change
    trained_same, trained_distinct = caption_agreement(run, run.decoder, reference, reduced)
    untrained_same, untrained_distinct = caption_agreement(run, untrained, reference, reduced)
    rows += [Row("", f"feature cosine, {bf16_autocast.split(' +')[0]} vs fp32 (min)", cosine.min().item(), "",
                 note=f"mean {cosine.mean().item():.5f}, {images.size(0)} images"),
             Row("", "... of the image-specific part (batch mean removed)", centred.min().item(), "",
                 note=f"mean {centred.mean().item():.5f}"),
             Row("", "same greedy caption, briefly trained decoder", trained_same, "fraction",
                 note=f"{trained_distinct} distinct captions among {images.size(0)}"),
             Row("", "same greedy caption, untrained decoder", untrained_same, "fraction",
                 note=f"{untrained_distinct} distinct captions among {images.size(0)}")]
    figures.update({"feature_cosine_min": cosine.min().item(), "feature_centred_cosine_min": centred.min().item(),
                    "greedy_caption_agreement": trained_same, "greedy_caption_agreement_untrained": untrained_same})
    return rows, figures


def bench_training_step(settings: BenchSettings, device: torch.device, matmul: dict[str, float]
                        ) -> tuple[list[Row], dict]:
    """One step of the demo recipe's pretraining (its CNN from scratch on the object labels, about half of
    `make demo`; the captioner then trains from cached features, section 1): seconds a step in fp32 and in bf16
    autocast (CUDA: its AMP dtype), the one precision auto picks marked; and, when the recipe's CNN is not the
    product's ResNet-50, the same step with a ResNet-50 (what the recipe would cost with it). Where bf16 is emulated,
    its step is timed once, briefly, on an eighth of the batch: enough to show why it is not chosen."""
    recipe = make_config(RECIPE, device=device.type)
    if settings.recipe_image_size:  # --quick
        recipe = recipe.replace(image_size=settings.recipe_image_size, resize_size=settings.recipe_image_size,
                                pretrain_batch_size=settings.recipe_batch_size)
    reduced = "bf16" if device.type == "cpu" else precision_name(autocast_dtype(device, "auto"))
    chosen = bench_precision(device)
    precisions = {"fp32": (recipe.backbone, "fp32"), f"{reduced} autocast": (recipe.backbone, reduced)}
    ways = dict(precisions)
    if recipe.backbone != "resnet50":
        ways["ResNet-50 instead, auto"] = ("resnet50", chosen)
    emulated = {} if reduced_native(device) else {f"{reduced} autocast": ways.pop(f"{reduced} autocast")}
    generator = torch.Generator().manual_seed(0)
    colours, shapes = len(easy.COLOURS), len(easy.SHAPES)  # the easy set's labels, as pretrained
    labels = len(easy.BACKGROUNDS) + colours + shapes + colours * shapes
    images = torch.randn(recipe.pretrain_batch_size, 3, recipe.image_size, recipe.image_size, generator=generator)
    targets = (torch.rand(recipe.pretrain_batch_size, labels, generator=generator) < 0.05).float()
    grid = layer3_side(recipe.image_size)
    cells = torch.rand(recipe.pretrain_batch_size, colours * shapes + 1, grid, grid, generator=generator).softmax(1)
    centres = torch.randint(colours * shapes + 1, (recipe.pretrain_batch_size, grid, grid), generator=generator) \
        if recipe.object_features else None  # the recipe's captioner reads a centre head, which is pretrained too

    def step(backbone: str, precision: str, batch: int = recipe.pretrain_batch_size) -> Callable[[], int]:
        model, optimizer, scaler = pretraining.build(backbone, labels, colours * shapes, recipe.pretrain_lr,
                                                          device, precision, recipe.object_features)
        model.train()
        return lambda: (pretraining.train_step(model, optimizer, scaler, images[:batch], targets[:batch],
                                                    cells[:batch], device, precision,
                                                    None if centres is None else centres[:batch]), batch)[1]

    flops: dict[str, float] = {}  # per image
    rates = compare({name: step(*way) for name, way in ways.items()}, settings, device, flops=flops)  # images/s
    small = max(2, recipe.pretrain_batch_size // 8)  # BatchNorm needs two images
    for name, way in emulated.items():
        say(f"   {name}: emulated here, timed briefly on {small} images")
        rates[name] = compare({name: step(*way, batch=small)}, dataclasses.replace(
            settings, rounds=settings.emulated_steps, round_seconds=0.0, warmup=1), device, flops=flops)[name]
    # An emulated precision is measured against fp32's rate: what this machine computes instead.
    precision_of = {name: "fp32" if name in emulated else way[1] for name, way in {**ways, **emulated}.items()}
    auto = next(name for name in precisions if name.startswith(chosen))
    fastest = max(precisions, key=rates.get)
    batch = recipe.pretrain_batch_size
    notes = {"fp32": f"demo recipe's {recipe.backbone}, batch of {batch} images at {recipe.image_size} px",
             "ResNet-50 instead, auto": "the product's encoder, same batch"}
    for name in emulated:
        notes[name] = f"emulated: timed briefly on {small} images, scaled to {batch}; of mm: of fp32's rate"
    rows = [rated(Row("6 training step" if index == 0 else "",
                      f"pretraining, {name}" + (" (auto)" if name == auto else ""),
                      batch / rates[name], "s/step", None if index == 0 else rates[name] / rates["fp32"],
                      "; ".join(note for note in (notes.get(name), name == fastest and "fastest precision")
                                if note)),
                  rates[name], flops.get(name), precision_of[name], matmul)
            for index, name in enumerate(rates)]
    figures = {"train_step_auto": auto, "train_step_fastest": fastest,
               "train_step_auto_vs_fastest": rates[auto] / rates[fastest],
               "train_step_seconds": {name: batch / rate for name, rate in rates.items()},
               "share_pretraining_step": rows[list(rates).index(auto)].share}
    return rows, figures


@torch.no_grad()
def caption_agreement(run: training.Run, decoder: DecoderRNN, reference: torch.Tensor, reduced: torch.Tensor
                      ) -> tuple[float, int]:
    """Fraction of images whose greedy caption is the same from both pooled features; distinct reference captions."""
    decoder.eval()
    captions = [[run.vocab.clean_sentence(ids) for ids in decoder.greedy(run.encoder.project(pooled),
                                                                       run.config.max_len).tolist()]
                for pooled in (reference, reduced)]
    same = sum(a == b for a, b in zip(*captions)) / len(captions[0])
    return same, len(set(captions[0]))


def original_transform(image_size: int, resize_size: int, train: bool = False, random_crop: bool = True,
                       hflip: bool = False) -> transforms.Compose:
    """The original's preprocessing: torchvision's PIL transforms (Pillow resize, ToTensor, Normalize)."""
    crop = transforms.RandomCrop(image_size) if train and random_crop else transforms.CenterCrop(image_size)
    steps = [transforms.Resize(resize_size, antialias=True), crop]
    if train and hflip:
        steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def bench_loading(settings: BenchSettings, config: Config) -> tuple[list[Row], dict]:
    """Image decoding + preprocessing images/s, one thread (as in a DataLoader worker), and each way's pixels."""
    files = sorted((Path(config.data_dir) / "images" / config.train_split).glob("*.jpg"))[:32]
    original = original_transform(config.image_size, config.resize_size)
    transform = Preprocess(config.image_size, config.resize_size)

    def pillow(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return original(image.convert("RGB"))

    ways: dict[str, tuple[str, Callable[[Path], torch.Tensor]]] = {
        "old": ("Image.open().convert('RGB') + PIL transforms", pillow),
        "new": ("load_image (JPEG draft) + Preprocess (uint8 tensors)", lambda path: transform(
            load_image(path, min_side=config.resize_size))),
        "full_decode": ("... the same at full-scale decode (no draft)", lambda path: transform(
            load_image(path))),
    }

    def batch_of(function: Callable[[Path], torch.Tensor]) -> Callable[[], int]:
        def run() -> int:
            for path in files:
                function(path)
            return len(files)
        return run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = compare({key: batch_of(function) for key, (_, function) in ways.items()}, settings,
                        torch.device("cpu"))
        reference = torch.stack([pillow(path) for path in files[:8]])
        # Mean absolute difference from the original's pixels, in units of the 0..255 scale.
        scale = 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        differences = {key: ((torch.stack([function(path) for path in files[:8]]) - reference).abs() * scale
                             ).mean().item() for key, (_, function) in ways.items()}
    finally:
        torch.set_num_threads(threads)
    rows = [Row("3 image loading" if key == "old" else "", label, rates[key], "images/s",
                None if key == "old" else rates[key] / rates["old"],
                f"mean |diff| {differences[key]:.2f} grey levels" if key != "old"
                else f"{settings.width}x{settings.height} JPEG")
            for key, (label, _) in ways.items()]
    figures = {"decode_speedup": rates["new"] / rates["old"], "decode_images_per_s_old": rates["old"],
               "decode_images_per_s_new": rates["new"], "decode_mean_abs_diff_grey_levels": differences["new"],
               "decode_full_scale_speedup": rates["full_decode"] / rates["old"]}
    return rows, figures


def bench_captioning(settings: BenchSettings, config: Config, run: training.Run, store: FeatureStore,
                     device: torch.device, matmul: dict[str, float]) -> tuple[list[Row], dict]:
    """Captioning images/s from cached features (decoder only, so the CNN does not dominate; fp32, as decoding
    runs)."""
    with torch.no_grad():
        rows = [store.get(image_id) for image_id in store.meta["image_ids"]]
        pooled = torch.stack([row for row in rows if row is not None])  # (images, feature_size)
        features = run.encoder.project(pooled.to(device))  # (images, embed)
    decoder = run.decoder.eval()
    chunks = features.split(settings.caption_batch)
    lengths = []

    def batched_greedy() -> int:
        for chunk in chunks:
            lengths.append((decoder.greedy(chunk, config.max_len) != decoder.pad_index).sum(1).float().mean())
        return features.size(0)

    def single_greedy() -> int:
        for index in range(min(settings.single_images, features.size(0))):
            decoder.greedy(features[index:index + 1], config.max_len)
        return min(settings.single_images, features.size(0))

    def batched_beam() -> int:
        for chunk in chunks:
            decoder.beam_search(chunk, beam_size=settings.beam_size, max_len=config.max_len)
        return features.size(0)

    flops: dict[str, float] = {}
    rates = compare({"old": single_greedy, "new": batched_greedy, "beam": batched_beam}, settings, device,
                    flops=flops)
    note = f"decoder only, {run.decoder.vocab_size} words, mean {torch.stack(lengths).mean().item():.1f} tokens"
    rows = [Row("4 captioning", "greedy, one image at a time", rates["old"], "images/s", note=note),
            Row("", f"greedy, batches of {settings.caption_batch}", rates["new"], "images/s",
                rates["new"] / rates["old"]),
            Row("", f"beam {settings.beam_size}, batches of {settings.caption_batch}", rates["beam"], "images/s",
                rates["beam"] / rates["old"], "decoding (evaluation)")]
    rows = [rated(row, rates[key], flops[key], "fp32", matmul) for row, key in zip(rows, ("old", "new", "beam"))]
    figures = {"batched_caption_speedup": rates["new"] / rates["old"], "caption_images_per_s_single": rates["old"],
               "caption_images_per_s_batched": rates["new"], "beam_images_per_s_batched": rates["beam"],
               "share_decoding": rows[2].share}
    return rows, figures


def bench_scst(settings: BenchSettings, config: Config, run: training.Run, store: FeatureStore, device: torch.device,
               matmul: dict[str, float]) -> tuple[list[Row], dict]:
    """Self-critical training images/s from the feature cache: sampling settings.scst_samples captions per image,
    their CIDEr rewards and the decoder's backward (training.self_critical.scst_step; the decoder in fp32, as it samples)."""
    run.config = run.config.replace(scst_samples=settings.scst_samples)
    loader = get_loader(None, mode="train", batch_size=config.batch_size, data_dir=config.data_dir,
                        split=config.train_split, vocab=run.vocab, features=store, seed=config.seed,
                        pin_memory=device.type == "cuda")
    self_critical.start_scst(run, loader)
    batches = endless(loader)
    run.decoder.train()

    def step() -> int:
        batch = next(batches).to(device, non_blocking=True)
        self_critical.scst_step(run, batch)
        return len(batch.image_ids)

    flops: dict[str, float] = {}
    rates = compare({"scst": step}, settings, device, flops=flops)
    rows = [rated(Row("7 self-critical", f"step from the cache, {settings.scst_samples} samples an image",
                      rates["scst"], "images/s", note="sampling, CIDEr rewards, the decoder's backward; fp32"),
                  rates["scst"], flops["scst"], "fp32", matmul)]
    return rows, {"scst_images_per_s": rates["scst"], "share_self_critical_step": rows[0].share}


def bench_token_cache(settings: BenchSettings, vocab: Vocabulary, work: Path) -> tuple[list[Row], dict]:
    """Loader start-up captions/s: CocoCaptionDataset with its token cache warm vs tokenizing every caption."""
    directory, cache = work / "tokens", work / "tokens" / "cache"
    split = write_caption_only_split(directory, settings.token_captions)
    started = time.perf_counter()
    CocoCaptionDataset(directory, split, vocab, cache_dir=cache)  # tokenizes and writes the cache
    cold_seconds = time.perf_counter() - started
    count = settings.token_captions

    def tokenize_again() -> int:
        CocoCaptionDataset(directory, split, vocab, cache_dir=None)
        return count

    def warm_cache() -> int:
        CocoCaptionDataset(directory, split, vocab, cache_dir=cache)
        return count

    rates = compare({"old": tokenize_again, "new": warm_cache}, settings, torch.device("cpu"), warmup=0)
    rows = [Row("5 loader start-up", "tokenize every caption", rates["old"], "captions/s",
                note=f"{count} captions: {count / rates['old']:.2f} s"),
            Row("", "token cache warm", rates["new"], "captions/s", rates["new"] / rates["old"],
                note=f"{count / rates['new']:.2f} s; first run (writes it) {cold_seconds:.2f} s")]
    figures = {"token_cache_speedup": rates["new"] / rates["old"], "startup_seconds_tokenize": count / rates["old"],
               "startup_seconds_cached": count / rates["new"]}
    return rows, figures


# ---------------------------------------------------------------------------------------------------- report


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo with its core and thread counts."""
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux
    return f"CPU {model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak GPU memory allocated by torch (MiB)."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20}
    if device.type == "cuda":
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def load_average() -> float | None:
    """The one-minute load average, when the platform has one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def print_header() -> None:
    """The table's columns: section, way, figure, unit, speed-up vs the old way, GFLOP/s and their share of the
    matrix product's rate in the way's precision, note."""
    print(f"{'section':<18}{'way':<52}{'figure':>11}  {'unit':<11}{'vs old':>8}{'GFLOP/s':>9}{'of mm':>7}  note",
          flush=True)


def print_rows(rows: list[Row]) -> None:
    """A section's rows of the fixed-width table, printed as soon as the section is timed."""
    for row in rows:
        if row.section:
            print("-" * 130)
        figure = "" if math.isnan(row.rate) else f"{row.rate:.5f}" if row.unit in ("", "fraction") \
            else f"{row.rate:.3f}" if row.unit == "s/step" else f"{row.rate:.1f}"
        speedup = f"{row.speedup:.2f}x" if row.speedup is not None else ""
        flops = f"{row.flops / 1e9:.1f}" if row.flops is not None else ""
        share = f"{row.share:.2f}" if row.share is not None else ""
        print(f"{row.section:<18}{row.way:<52}{figure:>11}  {row.unit:<11}{speedup:>8}{flops:>9}{share:>7}  "
              f"{row.note}")
    sys.stdout.flush()


def print_machine(device: torch.device, matmul: dict[str, float], settings: BenchSettings) -> None:
    """The device, its capability as held in this process, and its large matrix product's rate in each precision."""
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    if device.type == "cpu":
        held = cpu_capability.capability()
        print(held.describe())
        auto = choose_precision(device, "auto")[0]
        if auto != bench_precision(device):
            print(f"note: precision auto picks {auto} here from the CPU's flags, which a hold does not change; "
                  f"this benchmark times {bench_precision(device)}, what the held CPU computes natively")
    native = reduced_native(device)
    size = settings.matmul_size
    print("matrix product rate: " + ", ".join(
        f"{name} {rate / 1e9:.1f} GFLOP/s " + (f"({size}x{size}, best of 3)" if name == "fp32" or native else
                                               f"(emulated: {size // 4}x{size // 4}, once; not chosen)")
        for name, rate in matmul.items()) + "; 'of mm' below: a stage's FLOP/s over the rate in its precision",
          flush=True)


BENCH_SET = "bench_set.json"  # in a --data-dir that bench.py wrote: the sizes of its set, and whether it is whole


def bench_set(settings: BenchSettings) -> dict:
    """What the benchmark's synthetic set depends on."""
    return {"images": settings.images, "width": settings.width, "height": settings.height, "seed": 0}


def data_dir_ready(data_dir: Path, settings: BenchSettings) -> bool:
    """Whether data_dir already holds the set this benchmark writes. A folder that bench.py did not write (a
    dataset, anything) is refused with ValueError: the benchmark rewrites only its own set."""
    marker = data_dir / BENCH_SET
    if not marker.is_file():
        if any(data_dir.iterdir()):
            raise ValueError(f"--data-dir {data_dir} holds files that bench.py did not write, which it would "
                             f"replace with its own synthetic set: give a new or empty folder")
        return False
    try:
        written = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return written == {**bench_set(settings), "complete": True}


def write_bench_set(data_dir: Path, settings: BenchSettings) -> None:
    """Write the benchmark's synthetic set, marked as the benchmark's before it starts and whole once done."""
    say(f"writing {settings.images} synthetic {settings.width}x{settings.height} images to {data_dir}")
    write_json_atomic(data_dir / BENCH_SET, {**bench_set(settings), "complete": False})
    synthetic.generate(data_dir, n_train=settings.images, n_val=0, n_test=0, seed=0, width=settings.width,
                            height=settings.height)
    write_json_atomic(data_dir / BENCH_SET, {**bench_set(settings), "complete": True})


def run_benchmark(settings: BenchSettings, data_dir: Path, work: Path, device: torch.device,
                  pretrained: str) -> dict:
    """Generate the data (unless data_dir holds it already), measure the matrix product, run every section and print
    its rows as it finishes; returns the JSON figures."""
    started, load_before = time.perf_counter(), load_average()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    say("matrix product rate")
    matmul = bench_matmul(settings, device)
    print_machine(device, matmul, settings)
    if device.type == "cpu" and load_before is not None and load_before > 0.5:
        print(f"note: other processes were using the CPU (load {load_before:.2f} before the run); threads that wait "
              "for each other slow small operations most, so figures vary between runs (--threads 1 is steadier)")
    data_dir.mkdir(parents=True, exist_ok=True)
    if not data_dir_ready(data_dir, settings):
        write_bench_set(data_dir, settings)
    config = bench_config(settings, data_dir, work, device.type, pretrained)
    vocab = padded_vocabulary(config, settings.vocab_size)
    print(f"ResNet-50 weights: {'ImageNet' if pretrained == 'yes' else 'random (timings do not depend on them)'}; "
          f"vocabulary {len(vocab)} words; {settings.rounds} alternating rounds per comparison, median shown")
    print_header()
    figures: dict = {"matmul_flops": matmul}
    say("1/7 training throughput")
    rows, more, run, store = bench_training(settings, config, vocab, device, work, matmul)
    sections = [("2/7 encoder feature extraction", lambda: bench_encoder(settings, config, run, device, matmul)),
                ("3/7 image loading", lambda: bench_loading(settings, config)),
                ("4/7 captioning", lambda: bench_captioning(settings, config, run, store, device, matmul)),
                ("5/7 loader start-up", lambda: bench_token_cache(settings, vocab, work)),
                ("6/7 training step of the demo recipe", lambda: bench_training_step(settings, device, matmul)),
                ("7/7 self-critical step", lambda: bench_scst(settings, config, run, store, device, matmul))]
    print_rows(rows)
    figures.update(more)
    for title, section in sections:
        say(title)
        rows, more = section()
        print_rows(rows)
        figures.update(more)
    memory = peak_memory_mb(device)
    loads = (load_before, load_average())
    print("-" * 130)
    load_text = f"; load average {loads[0]:.2f} before, {loads[1]:.2f} after" if loads[0] is not None else ""
    print(", ".join(f"{key} {value:.0f} MiB" for key, value in memory.items())
          + f"; total {time.perf_counter() - started:.0f} s{load_text}")
    capability = dataclasses.asdict(cpu_capability.capability()) if device.type == "cpu" else {}
    return {**figures, "device": device_name(device), "capability": capability,
            "device_type": device.type, **memory, "load_average": loads, "settings": dataclasses.asdict(settings),
            "seconds": time.perf_counter() - started}


def doc_path(directory: Path, device: torch.device) -> Path:
    """Where --write-doc writes: the folder, then the CPU's flags (avx512_bf16.txt, avx2_held.txt, ...) or the GPU."""
    if device.type == "cuda":
        name = "".join(c if c.isalnum() else "_" for c in torch.cuda.get_device_name(device).lower()).strip("_")
        return directory / f"cuda_{name}.txt"
    return directory / cpu_capability.capability().doc_name


class Tee:
    """Stdout that also keeps what is printed, for --write-doc."""

    def __init__(self, stream) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of under a minute")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", type=Path, help="where to write (and keep) the synthetic images, a new or "
                                                      "empty folder, or one bench.py wrote; default: a temporary "
                                                      "folder, removed afterwards")
    parser.add_argument("--pretrained", default="no", choices=("no", "auto", "yes"),
                        help="ImageNet weights for ResNet-50 (timings do not depend on them; default no)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="images per training batch (default 16; a GPU wants more, e.g. 64)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice; 1 avoids stalls on a busy machine)")
    parser.add_argument("--write-doc", type=Path, nargs="?", const=DOCS_BENCH, metavar="DIR",
                        help="also write the output to DIR (default docs/bench)/<the CPU's flags>.txt, e.g. "
                             "avx512_bf16.txt, avx2.txt, avx2_held.txt (held to AVX2 by the environment)")
    parser.add_argument("--replace-doc", action="store_true",
                        help="let --write-doc replace a file of that name (it refuses to by default)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's choice) or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 0:
        parser.error("--batch-size must be positive")
    settings = BenchSettings.quick() if args.quick else BenchSettings()
    if args.batch_size:
        settings = dataclasses.replace(settings, batch_size=args.batch_size,
                                       images=max(settings.images, 4 * args.batch_size))
    try:
        device = resolve_device(args.device)
        if args.data_dir:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            data_dir_ready(args.data_dir, settings)  # refuses a folder it did not write, before any work
        doc = check_file(doc_path(args.write_doc, device), "--write-doc's file") if args.write_doc else None
        if doc and doc.exists() and not args.replace_doc:
            raise ValueError(f"{doc} exists and this run did not write it: move it away, or add --replace-doc")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot create --data-dir {args.data_dir} ({error.strerror or error}); choose a writable folder",
              file=sys.stderr)
        return 2
    stdout = sys.stdout = Tee(sys.stdout) if doc else sys.stdout
    try:
        with tempfile.TemporaryDirectory(prefix="bench_") as temporary:
            work = Path(temporary)
            figures = run_benchmark(settings, args.data_dir or work / "data", work, device, args.pretrained)
        print(json.dumps(figures), flush=True)
    finally:
        sys.stdout = stdout.stream if doc else stdout
    if doc:
        with atomic_write(doc, "w") as handle:
            handle.write(stdout.text())
        say(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
