"""Teach the CNN to see a set's objects before it learns to caption: a stand-in for ImageNet weights, read from the
set's own COCO files (instances_<split>.json, stuff_<split>.json) through pycocotools.

A ResNet from scratch (residual branches zero-initialised) learns which backgrounds (stuff categories), categories,
and words of the categories' names and supercategories are in each image (multi-label, binary cross-entropy), on
images preprocessed once into memory, as the captioner will see them (Preprocess), with Adam at a rate held until
the last fifth of the steps and then lowered to 0 (learning_rate). A second head, a 1x1 convolution on layer3's map,
tells for each cell which category covers it (cross-entropy against the share of the cell each category's
segmentation covers): it makes the CNN bind each colour to its shape, which the labels alone do not ask for. With
centres (the recipe's object_features) a third head names for each cell the category whose object has its centre
there (0: none); it is saved beside the ResNet in the weights file ("centres.*"), and the captioner reads it
(model.EncoderCNN). Why each of these choices: docs/EXPERIMENTS.md ("pretraining").

After each epoch it reports on the val split: the top background, the top category of one-object images, and object
precision (of an image's k top-scoring categories, k its number of distinct ones, the share that are in it).
The command line is pretrain_encoder.py; the synthetic recipe runs it as its first stage (training/pretrained.py).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pycocotools import mask as mask_utils

from captioning.annotations import annotation_path, image_path, load_coco, load_instances, object_files
from data_loader import Preprocess, load_image
from captioning.config import Config
from captioning.files import atomic_write, brief
from captioning.backbone import OBJECT_HEAD, layer3_side, zero_init_residual
from captioning.runtime import autocast, autocast_dtype, resolve_device

DECAY_SHARE = 0.2  # the learning rate's last share of the steps, down to 0 (learning_rate)


@dataclass
class ImageObjects:
    """One image as the pretraining reads it: its entry (id, file_name, width, height), its instance annotations
    (in file order: a later one covers an earlier one) and the names of its stuff categories."""

    image: dict
    instances: list[dict]
    stuff: list[str]

    @property
    def count(self) -> int:
        """Objects annotated one by one (a crowd annotation is not one object)."""
        return sum(not annotation.get("iscrowd") for annotation in self.instances)


class SplitObjects:
    """A split's images with their objects, read through pycocotools from the set's COCO files: the captions file
    for the images, instances_<split>.json for the objects and, when there, stuff_<split>.json for the backgrounds
    (a set of another kind of split folder reads the files annotations.object_files names)."""

    def __init__(self, data_dir: str | Path, split: str, max_images: int = 0) -> None:
        images = load_coco(annotation_path(data_dir, split)).dataset["images"][:max_images or None]
        names = [image["file_name"] for image in images]
        try:
            self.instances = [load_instances(path) for path in object_files(data_dir, "instances", split, names)]
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error}: pretraining the CNN (pretrain_epochs) reads each image's objects from "
                                    "COCO instance annotations; add instances files in COCO's format, or train "
                                    "without pretraining (train.py --captions-only)") from None
        with contextlib.suppress(FileNotFoundError):  # stuff is optional: COCO-Stuff is a separate download
            self.stuff = [load_instances(path) for path in object_files(data_dir, "stuff", split, names)]
        if not hasattr(self, "stuff"):
            self.stuff = []
        self.images = [ImageObjects(image, [annotation for coco in self.instances
                                            for annotation in coco.imgToAnns.get(image["id"], [])],
                                    [coco.cats[annotation["category_id"]]["name"] for coco in self.stuff
                                     for annotation in coco.imgToAnns.get(image["id"], [])]) for image in images]

    def category_name(self, annotation: dict) -> str:
        """The name of an instance annotation's category."""
        return next(coco.cats[annotation["category_id"]]["name"] for coco in self.instances
                    if annotation["category_id"] in coco.cats)

    @staticmethod
    def mask(annotation: dict, height: int, width: int) -> np.ndarray:
        """(height, width) 0/1 pixels of an instance annotation, as pycocotools' annToMask reads them: polygons,
        RLE or uncompressed RLE; its box where it has no segmentation."""
        segmentation = annotation.get("segmentation")
        if not segmentation:
            x, y, w, h = annotation["bbox"]
            box = np.zeros((height, width), dtype=np.uint8)
            box[max(int(y), 0):max(int(math.ceil(y + h)), 0), max(int(x), 0):max(int(math.ceil(x + w)), 0)] = 1
            return box
        try:
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            pixels = mask_utils.decode(rle)
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            raise ValueError(f"annotation {annotation.get('id')!r} of image {annotation['image_id']!r} has a "
                             f"segmentation pycocotools cannot read ({brief(error)})") from None
        if pixels.shape != (height, width):
            raise ValueError(f"annotation {annotation.get('id')!r} of image {annotation['image_id']!r}: its "
                             f"segmentation is {pixels.shape[1]}x{pixels.shape[0]}, the image {width}x{height}")
        return pixels


class Labels:
    """The label set of a split's files: its stuff categories (backgrounds), the words of its category names and
    their supercategories ("red", "circle"; "traffic", "light", "vehicle"), and its categories ("red circle")."""

    def __init__(self, split: SplitObjects) -> None:
        categories = {category["id"]: category for coco in split.instances for category in coco.dataset["categories"]}
        self.categories = [categories[key]["name"] for key in sorted(categories)]
        self.backgrounds = sorted({category["name"] for coco in split.stuff for category in coco.dataset["categories"]})
        words = {word for name in self.categories for word in name.split()}
        words |= {category["supercategory"] for category in categories.values() if category.get("supercategory")}
        self.words = sorted(words)
        self.names = ([("background", name) for name in self.backgrounds] + [("word", word) for word in self.words]
                      + [("category", name) for name in self.categories])
        self.index = {name: position for position, name in enumerate(self.names)}
        self.supercategory = {category["name"]: category.get("supercategory") for category in categories.values()}

    def span(self, kind: str) -> slice:
        """Where one kind of label sits: backgrounds, words or categories."""
        sizes = {"backgrounds": len(self.backgrounds), "words": len(self.words), "categories": len(self.categories)}
        start = 0
        for name, size in sizes.items():
            if name == kind:
                return slice(start, start + size)
            start += size
        raise KeyError(kind)

    def category(self, name: str) -> int:
        """Which category a name is, counted from 1 (0 if the train split's files do not list it): its class in
        the maps."""
        position = self.index.get(("category", name))
        return 0 if position is None else position - self.span("categories").start + 1

    def of(self, split: SplitObjects, image: ImageObjects) -> torch.Tensor:
        """(labels,) 0/1 targets of one image; a name the train split's files lack adds nothing."""
        target = torch.zeros(len(self.names))
        names = [("background", name) for name in image.stuff]
        for annotation in image.instances:
            category = split.category_name(annotation)
            names += [("category", category), *(("word", word) for word in category.split())]
            if self.supercategory.get(category):
                names.append(("word", self.supercategory[category]))
        for name in names:
            if name in self.index:
                target[self.index[name]] = 1.0
        return target


def load_split(data_dir: Path, split: str, objects: SplitObjects, labels: Labels, image_size: int,
               resize_size: int = 0, fit: str = "crop") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preprocessed images (N, 3, S, S) as the captioner will see them, their targets (N, labels) and object counts."""
    transform = Preprocess(image_size, resize_size or image_size, fit=fit)
    pixels = [transform(load_image(image_path(data_dir, split, item.image["file_name"]), transform.resize_size))
              for item in objects.images]
    targets = torch.stack([labels.of(objects, item) for item in objects.images])
    counts = torch.tensor([item.count for item in objects.images])
    return torch.stack(pixels).contiguous(memory_format=torch.channels_last), targets, counts


def object_map(objects: SplitObjects, item: ImageObjects, labels: Labels, transform: Preprocess) -> torch.Tensor:
    """(S, S) which category covers each pixel of the image as the CNN sees it (Preprocess.label_map), counted
    from 1 (Labels.category), 0 where no object is: each annotation's segmentation, a later one over an earlier."""
    image = item.image
    canvas = np.zeros((image["height"], image["width"]), dtype=np.float32)
    for annotation in item.instances:
        canvas[objects.mask(annotation, image["height"], image["width"]) > 0] = \
            labels.category(objects.category_name(annotation))
    return transform.label_map(torch.from_numpy(canvas))


def cell_targets(objects: SplitObjects, labels: Labels, transform: Preprocess, grid: int) -> torch.Tensor:
    """(N, categories + 1, grid, grid): the share of each cell of a grid x grid partition of the image that each
    category covers (class 0: no object), the targets of the pretraining's map head."""
    classes = len(labels.categories) + 1
    targets = [F.adaptive_avg_pool2d(F.one_hot(object_map(objects, item, labels, transform), classes)
                                     .permute(2, 0, 1).float(), grid) for item in objects.images]
    return torch.stack(targets)


def centre_targets(objects: SplitObjects, labels: Labels, transform: Preprocess, grid: int) -> torch.Tensor:
    """(N, grid, grid): which category (Labels.category) has an object's centre (its box's) in each cell, 0 where
    none has; the targets of the centre head, which asks the CNN to tell objects of one category apart, as counting
    needs. Crowd annotations have no centre."""
    targets = torch.zeros(len(objects.images), grid, grid, dtype=torch.long)
    size = transform.image_size
    for row, item in enumerate(objects.images):
        for annotation in item.instances:
            if annotation.get("iscrowd"):
                continue
            x, y, w, h = annotation["bbox"]
            across, down = transform.point(x + w / 2, y + h / 2, item.image["width"], item.image["height"])
            if 0 <= across < size and 0 <= down < size:  # centres outside the crop name no cell
                targets[row, int(down * grid / size), int(across * grid / size)] = \
                    labels.category(objects.category_name(annotation))
    return targets


class Pretrainer(torch.nn.Module):
    """A torchvision ResNet with its heads: its classifier (fc), which names the labels from the pooled features;
    a 1x1 convolution on layer3's map that tells, cell by cell, which colour-shape pair is there; and optionally
    another that tells in which cell each object's centre lies."""

    def __init__(self, net: torch.nn.Module, pairs: int, centres: bool = False) -> None:
        super().__init__()
        self.net = net
        self.cells = torch.nn.Conv2d(net.layer4[0].conv1.in_channels, pairs + 1, kernel_size=1)
        self.centres = torch.nn.Conv2d(net.layer4[0].conv1.in_channels, pairs + 1, kernel_size=1) if centres \
            else None

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(label logits (N, labels), cell logits (N, pairs + 1, H/16, W/16), centre logits of the same shape or
        None)."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        x = net.layer3(net.layer2(net.layer1(x)))
        label_logits = net.fc(torch.flatten(net.avgpool(net.layer4(x)), 1))
        return label_logits, self.cells(x), None if self.centres is None else self.centres(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(images)[0]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor,
             labels: Labels, device: torch.device = torch.device("cpu"), precision: str = "fp32"
             ) -> dict[str, float]:
    """Top background right (images with one); top category right on one-object images; object precision at k (of
    an image's k top-scoring categories, k its number of distinct categories, the share that are in it)."""
    model.eval()
    with autocast(device, precision):
        logits = torch.cat([model(chunk.to(device)).float().cpu() for chunk in images.split(100)])

    def top_right(kind: str, rows: torch.Tensor) -> float:
        span = labels.span(kind)
        if span.stop == span.start or not rows.any():
            return float("nan")
        return (logits[rows, span].argmax(1) == targets[rows, span].argmax(1)).float().mean().item()

    wanted = targets[:, labels.span("categories")] > 0.5
    k = wanted.sum(1)
    ranked = logits[:, labels.span("categories")].argsort(1, descending=True)
    hits = sum(wanted[row, ranked[row, :k[row]]].sum().item() for row in range(len(targets)))
    with_background = targets[:, labels.span("backgrounds")].sum(1) > 0
    return {"background": top_right("backgrounds", with_background), "category": top_right("categories", counts == 1),
            "objects": hits / max(k.sum().item(), 1)}


def build(backbone: str, labels: int, pairs: int, lr: float, device: torch.device, precision: str,
          centres: bool = False) -> tuple[Pretrainer, torch.optim.Optimizer, torch.amp.GradScaler]:
    """A ResNet from scratch with a classifier of `labels` outputs and a map head of `pairs` + 1 classes (and, with
    centres, a centre head like it), its Adam, and a gradient scaler (used for fp16)."""
    net = torchvision.models.get_model(backbone, weights=None, num_classes=labels)
    zero_init_residual(net)
    model = Pretrainer(net, pairs, centres).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device, precision) is torch.float16)
    return model, optimizer, scaler


def learning_rate(lr: float, step: int, total: int, decay: float = DECAY_SHARE) -> float:
    """The rate for step `step` (from 0) of `total`: lr, then down to 0 in a straight line over the last `decay` share
    of the steps (a warmup-stable-decay schedule without the warmup; Hägele et al. 2024).
 A cosine's rate is half gone when shapes begin to be learned; this one
    holds it until then (docs/EXPERIMENTS.md, "The rate held, then lowered").
    """
    return lr * min(1.0, (total - step) / (decay * total))


def train_step(model: Pretrainer, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, targets: torch.Tensor, cells: torch.Tensor, device: torch.device,
               precision: str, centres: torch.Tensor | None = None) -> float:
    """One optimisation step on a batch of images (batch, 3, S, S), their 0/1 label targets and their cell targets
    (cell_targets), and centre targets (centre_targets) for a model with a centre head; returns the loss: binary
    cross-entropy of the labels plus cross-entropy of the cells (plus that of the centres). An update from a loss
    that is not finite is not applied: the caller stops."""
    with autocast(device, precision):
        logits, cell_logits, centre_logits = model.heads(images.to(device, non_blocking=True))
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.to(device))
    cells = cells.to(device)
    loss = loss - (cells * F.log_softmax(cell_logits.float(), dim=1)).sum(1).mean()
    if centre_logits is not None:
        loss = loss + F.cross_entropy(centre_logits.float(), centres.to(device))
    if not torch.isfinite(loss):
        return loss.item()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


@dataclass
class Prepared:
    """A set's images preprocessed at one size, with what the pretraining learns from them."""

    train_x: torch.Tensor  # (N, 3, S, S)
    train_y: torch.Tensor  # (N, labels)
    train_cells: torch.Tensor  # (N, classes, G, G): the share of each layer3 cell each category covers
    train_centres: torch.Tensor | None  # (N, G, G): the category whose object has its centre in each cell
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_counts: torch.Tensor


def prepare_size(data_dir: Path, splits: tuple[str, str], objects: tuple[SplitObjects, SplitObjects], labels: Labels,
                 image_size: int, resize_size: int, fit: str, centres: bool) -> Prepared:
    """Both splits preprocessed at image_size (resized to resize_size first), and the train split's targets."""
    train_x, train_y, _ = load_split(data_dir, splits[0], objects[0], labels, image_size, resize_size, fit)
    val_x, val_y, val_counts = load_split(data_dir, splits[1], objects[1], labels, image_size, resize_size, fit)
    grid, transform = layer3_side(image_size), Preprocess(image_size, resize_size, fit=fit)
    return Prepared(train_x, train_y, cell_targets(objects[0], labels, transform, grid),
                    centre_targets(objects[0], labels, transform, grid) if centres else None, val_x, val_y,
                    val_counts)


def pretrain(data_dir: str | Path, image_size: int, epochs: int, backbone: str = "resnet18",
             lr: float = Config.pretrain_lr, batch_size: int = Config.pretrain_batch_size, resize_size: int = 0,
             max_images: int = 0, seed: int = 0, device: str = "auto", precision: str = "auto", centres: bool = False,
             train_split: str = "train", val_split: str = "val", fit: str = "crop", small_epochs: int = 0,
             small_size: int = 0, say=lambda line: print(line, flush=True)) -> tuple[Pretrainer, list[dict[str, float]]]:
    """Train a ResNet from scratch on the split's labels and object maps; returns it (net: the ResNet, with its label
    classifier as fc) and one report per epoch. precision as for training (runtime.py: bf16 autocast only on CPUs
    that compute bf16 natively). centres adds the centre head (centre_targets), which the captioner reads with
    object_features. The first small_epochs see the images at small_size (progressive resizing: the same steps at a
    fraction of the pixels while the CNN learns coarse things; its heads are 1x1 convolutions, so they fit any grid);
    the rest at image_size, as the captioner will see them."""
    data_dir = Path(data_dir)
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    objects = (SplitObjects(data_dir, train_split, max_images), SplitObjects(data_dir, val_split, max_images))
    labels = Labels(objects[0])
    started = time.time()
    resize_size = resize_size or image_size

    def at(size: int) -> Prepared:
        resize = resize_size if size == image_size else round(resize_size * size / image_size)
        return prepare_size(data_dir, (train_split, val_split), objects, labels, size, resize, fit, centres)
    small_epochs = min(small_epochs, epochs) if small_size and small_size != image_size else 0
    sizes = {size: at(size) for size in ([small_size] if small_epochs else []) + [image_size]}
    full = sizes[image_size]
    model, optimizer, scaler = build(backbone, len(labels.names), full.train_cells.size(1) - 1, lr, device,
                                     precision, centres)
    steps_per_epoch = len(full.train_x) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the train split has {len(full.train_x)} images, fewer than one batch ({batch_size})")
    reports, step, total = [], 0, epochs * steps_per_epoch
    for epoch in range(epochs):
        size = small_size if epoch < small_epochs else image_size
        data = sizes[size]
        model.train()
        order = torch.randperm(len(data.train_x), generator=generator)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(lr, step, total)
            index = order[start:start + batch_size]
            loss = train_step(model, optimizer, scaler, data.train_x[index], data.train_y[index],
                              data.train_cells[index], device, precision,
                              None if data.train_centres is None else data.train_centres[index])
            if not math.isfinite(loss):
                raise FloatingPointError(f"the CNN's pretraining loss became {loss} at epoch {epoch + 1}: it diverged "
                                         f"at the learning rate {lr:g}")  # the caller names its flag
            step += 1
        report = {"epoch": epoch + 1, "size": size,
                  **accuracy(model, data.val_x, data.val_y, data.val_counts, labels, device, precision),
                  "seconds": round(time.time() - started, 1)}
        say(f"pretraining the CNN, epoch {report['epoch']}/{epochs} at {size} px: val background "
            f"{report['background']:.2f}, category of one-object images {report['category']:.2f}, objects "
            f"{report['objects']:.2f} ({report['seconds']:.0f} s)")
        reports.append(report)
    return model, reports


def save_backbone(model: Pretrainer, path: str | Path) -> Path:
    """Write the ResNet without its classifier as a torchvision state dict (what `--weights FILE` loads), and beside
    it the centre head if there is one (keys "centres.*", which the captioner reads with object_features)."""
    state = {name: tensor.cpu() for name, tensor in model.net.state_dict().items() if not name.startswith("fc.")}
    if model.centres is not None:
        state.update({OBJECT_HEAD + name: tensor.cpu() for name, tensor in model.centres.state_dict().items()})
    with atomic_write(Path(path)) as temporary:
        torch.save(state, temporary)
    return Path(path)
