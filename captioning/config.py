"""Hyperparameters: one dataclass with documented defaults, overridden by a recipe file and the command line.

The same names are used everywhere: the dataclass field ``hidden_size`` is the CLI flag ``--hidden-size``, the
notebooks' parameter ``hidden_size`` and the key stored in every checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from captioning.files import check_file

CHOICES = {
    "pretrained": ("yes", "no", "auto"),
    "train_backbone": ("yes", "no", "auto"),
    "backbone": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "feature_cache": ("auto", "off"),
    "device": ("auto", "cpu", "cuda"),
    "lr_schedule": ("plateau", "cosine"),
    "image_fit": ("crop", "squash", "pad"),
    "attention_stage": ("layer3", "layer4"),
}

# Numeric settings: (lowest, highest) allowed, inclusive; None = no upper bound. Checked before any work starts.
RANGES = {
    "epochs": (1, None), "batch_size": (1, None), "embed_size": (1, None), "hidden_size": (1, None),
    "num_layers": (1, None), "vocab_threshold": (1, None),
    # COCO's photos are at most 640 px: a larger input only costs memory (a crafted checkpoint could ask for tens of
    # gigabytes); the resize leaves room for the 8/7 (or the weights' own) margin around the largest crop.
    "image_size": (1, 1024), "resize_size": (0, 1280),
    "max_caption_length": (2, None),  # <start> and <end> at least
    "max_len": (1, 200),  # longest generated caption: decoding stops here even if <end> never comes
    "weight_decay": (0, None), "grad_clip": (0, None), "lr_patience": (0, None), "early_stop_patience": (0, None),
    "fine_tune_after": (-1, None), "fine_tune_blocks": (1, 4), "scheduled_sampling": (0, 1),
    "scst_epochs": (0, None), "scst_samples": (2, None),  # each sample's baseline is the others' mean reward
    "val_beam_size": (1, None), "val_max_images": (0, None), "num_workers": (0, None), "seed": (0, None),
    "log_every": (1, None), "max_steps_per_epoch": (0, None), "bow_loss_weight": (0, None),
    "pretrain_epochs": (0, None), "pretrain_batch_size": (2, None),  # BatchNorm needs two images
    "pretrain_small_share": (0, 0.9), "pretrain_small_scale": (0.25, 1),
}
# A recipe groups its settings as the dataclass below does, each group an object ("data": {...}); flat keys are read
# too. The checkpoint stores them flat.
SECTIONS = {
    "data": ("data_dir", "train_split", "val_split", "vocab_threshold", "vocab_file", "vocab_from_file", "image_size",
             "resize_size", "image_fit", "random_crop", "hflip", "max_caption_length"),
    "model": ("backbone", "pretrained", "weights", "train_backbone", "embed_size", "hidden_size", "num_layers",
              "dropout", "bow_loss_weight", "attention", "attention_stage", "query_word", "coverage",
              "object_features"),
    "pretraining": ("pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "pretrain_small_share",
                    "pretrain_small_scale"),
    "training": ("epochs", "batch_size", "lr", "backbone_lr", "weight_decay", "grad_clip", "lr_schedule",
                 "lr_patience", "lr_factor", "early_stop_patience", "fine_tune_after", "fine_tune_blocks",
                 "scheduled_sampling"),
    "self_critical": ("scst_epochs", "scst_lr", "scst_samples"),
    "validation": ("val_metric", "val_beam_size", "val_max_images", "max_len"),
    "runtime": ("device", "precision", "feature_cache", "num_workers", "seed", "out", "log_every",
                "max_steps_per_epoch", "recipe"),
}
VAL_METRICS = ("CIDEr", "Bleu_4", "Bleu_3", "Bleu_2", "Bleu_1", "loss")  # what validation computes


@dataclass
class Config:
    """Everything a training run needs; stored verbatim in each checkpoint."""

    # --- data -----------------------------------------------------------------------------------------------
    data_dir: str = "data/synthetic"  # holds annotations/captions_<split>.json and images/<split>/
    train_split: str = "train"  # "train2014" for real COCO, "karpathy_train" with Karpathy's split
    val_split: str = "val"
    vocab_threshold: int = 5  # words seen fewer times in the training captions become <unk>
    vocab_file: str = ""  # where the vocabulary pickle lives; "" = <out>/vocab.pkl
    vocab_from_file: bool = True  # reuse vocab_file when it exists instead of rebuilding it
    image_size: int = 224  # side of the square crop fed to the CNN
    resize_size: int = 0  # shorter image side before cropping; 0 = as the ImageNet weights were evaluated (232 for
    # a 224 crop with ResNet-50's V2 weights, 256 with V1), or 8/7 of image_size without them
    image_fit: str = "crop"  # how a non-square image becomes the CNN's square input: crop (the shorter side to
    # resize_size, then the crop below: a wide image loses its sides), squash (to a square, nothing lost) or pad
    # (the longer side, padded to a square) (data_loader.Preprocess)
    random_crop: bool = True  # random crop while training, centre crop otherwise
    hflip: bool = True  # random horizontal flips while training (turn off when captions say left/right)
    max_caption_length: int = 50  # longer training captions are truncated (COCO: a handful are longer)

    # --- model ----------------------------------------------------------------------------------------------
    backbone: str = "resnet50"  # torchvision ResNet; the product uses ResNet-50
    pretrained: str = "auto"  # ImageNet weights: yes (fail without), no, auto (fall back to random with a warning)
    weights: str = "DEFAULT"  # which: torchvision's DEFAULT, IMAGENET1K_V1 or IMAGENET1K_V2, or a local file holding
    # them as a torchvision state dict (offline machines, shared clusters)
    train_backbone: str = "auto"  # auto: freeze a pretrained backbone, train a randomly initialised one
    embed_size: int = 256  # word embedding and projected image feature size
    hidden_size: int = 512  # LSTM state size
    num_layers: int = 1  # LSTM layers
    dropout: float = 0.0  # dropout on word embeddings and on the LSTM output
    bow_loss_weight: float = 0.0  # weight of the auxiliary "which words are in this image's captions" loss
    attention: bool = False  # the decoder also attends, word by word, over the cells of the CNN's third stage
    # (layer3: 14 x 14 at 224 px, as in Show, Attend and Tell); the pooled last stage stays its first input
    attention_stage: str = "layer3"  # attention: the ResNet stage whose cells it attends over, layer3 (14 x 14 at
    # 224 px) or layer4 (7 x 7, the last stage, whose mean is the pooled feature; half the feature cache's size)
    query_word: bool = False  # attention: where to look is asked by the word just read too, not the state alone, so
    # that once "red" is read the decoder looks at the red object for its shape (model.DecoderRNN.look_for)
    coverage: bool = False  # attention: where to look also sees how much attention each cell has had so far, so
    # that the decoder can tell the objects it has named from those it has not (model.Attention)
    object_features: bool = False  # attention: the captioner also reads the CNN's centre head (which pair has an
    # object's centre in each cell, and how many of each pair: model.EncoderCNN), which the run's pretraining learns
    # (pretrain_epochs), or which a weights file from `pretrain_encoder.py --centres` holds

    # --- stage: the CNN's pretraining on the set's objects (a set with instance files and no ImageNet weights) ---
    pretrain_epochs: int = 0  # first train the CNN from scratch this many epochs on the set's instances and stuff
    # files (captioning/pretraining.py), then caption with it as with ImageNet weights; 0 = no such stage
    pretrain_lr: float = 4e-3  # Adam for that pretraining, held, then down to 0 over the last fifth
    pretrain_batch_size: int = 16  # images per pretraining step
    pretrain_small_share: float = 0.0  # this share of those epochs, the first ones, see the images scaled by
    pretrain_small_scale: float = 0.67  # this (progressive resizing: the same steps on fewer pixels); 0 = none

    # --- training (cross-entropy) --------------------------------------------------------------------------
    epochs: int = 3  # cross-entropy epochs (the self-critical ones, scst_epochs, come after them)
    batch_size: int = 32  # images per batch, all their captions (~5x); under torchrun, shared by the processes
    lr: float = 1e-3  # Adam, for the decoder and the projection layers
    backbone_lr: float = 1e-4  # Adam, for trainable backbone layers
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    lr_schedule: str = "plateau"  # plateau: cut on a validation plateau; cosine: decay to 0 over all the epochs
    lr_patience: int = 1  # plateau: epochs without a better validation score before the learning rate is cut
    lr_factor: float = 0.5  # ... by this factor
    early_stop_patience: int = 0  # stop after this many epochs without improvement; 0 = never stop early
    fine_tune_after: int = -1  # unfreeze the last `fine_tune_blocks` ResNet stages after this epoch; -1 = never
    fine_tune_blocks: int = 1
    scheduled_sampling: float = 0.0  # max probability of feeding the model its own prediction (ramped per epoch)

    # --- stage: self-critical training, after the cross-entropy epochs --------------------------------------
    scst_epochs: int = 0  # after `epochs`, this many epochs train the decoder by self-critical sequence training
    scst_lr: float = 3e-5  # Adam learning rate of the decoder in those epochs
    scst_samples: int = 5  # captions sampled per image in those epochs; each one's baseline is the others' mean

    # --- validation -----------------------------------------------------------------------------------------
    val_metric: str = "CIDEr"  # best.pt is the best checkpoint by this caption metric ("loss" for val loss)
    val_beam_size: int = 1  # decoding used to score validation captions
    val_max_images: int = 0  # caption at most this many val images per epoch (0 = all)
    max_len: int = 20  # longest generated caption

    # --- runtime --------------------------------------------------------------------------------------------
    device: str = "auto"  # auto = CUDA when available
    precision: str = "auto"  # training autocast and the encoder's at inference. auto: bf16 on CPUs with native bf16
    # (AVX512-BF16 or AMX), fp32 on other CPUs (bf16 is emulated there, and slower), AMP on CUDA (runtime.py);
    # decoding and the losses stay fp32
    feature_cache: str = "auto"  # auto = cache pooled features when the backbone is frozen
    num_workers: int = 0  # DataLoader worker processes
    seed: int = 0
    out: str = "models"  # checkpoints, vocabulary and the training log go here
    log_every: int = 10  # steps between entries in the training log
    max_steps_per_epoch: int = 0  # stop an epoch early after this many steps (0 = full epochs; for quick tests)
    recipe: str = field(default="", metadata={"help": "the --config file this run started from"})

    def validate(self) -> "Config":
        """Check choices and ranges; raises ValueError naming the bad field."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in RANGES:
            check_range(name, getattr(self, name))
        for name in ("lr", "backbone_lr", "scst_lr", "lr_factor", "pretrain_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr_factor >= 1:
            raise ValueError(f"lr_factor must be below 1 (it cuts the learning rate), got {self.lr_factor}")
        if self.val_metric not in VAL_METRICS:
            raise ValueError(f"val_metric must be one of {', '.join(VAL_METRICS)}, got {self.val_metric!r}")
        if self.scst_epochs and self.early_stop_patience:
            raise ValueError("early_stop_patience and scst_epochs do not combine (stopping early would skip the "
                             "self-critical epochs): set one of them to 0")
        if self.pretrain_epochs and self.pretrained != "no":
            raise ValueError(f"pretrain_epochs ({self.pretrain_epochs}) trains the CNN from scratch and needs "
                             f"pretrained no (it is {self.pretrained!r}): set one of them differently")
        trains_cnn = self.train_backbone == "yes" or self.fine_tune_after >= 0 or (
            self.train_backbone == "auto" and self.pretrained == "no" and not self.pretrain_epochs)
        if self.batch_size < 2 and trains_cnn:
            raise ValueError("batch_size 1 with a CNN that trains: its BatchNorm layers need at least 2 images a "
                             "batch; give batch_size 2 or more, or freeze the CNN (train_backbone no)")
        if self.coverage and not self.attention:
            raise ValueError("coverage is of the attention over the CNN's cells: it needs attention true")
        if self.object_features and not self.attention:
            raise ValueError("object_features are read on the CNN's cells: they need attention true")
        if self.attention_stage != "layer3" and not self.attention:
            raise ValueError(f"attention_stage ({self.attention_stage}) is where the attention looks: it needs "
                             "attention true")
        if self.object_features and self.attention_stage != "layer3":
            raise ValueError(f"object_features come from a centre head on layer3's cells: they need attention_stage "
                             f"layer3, not {self.attention_stage}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.resize_size and self.resize_size < self.image_size:
            raise ValueError(f"resize_size ({self.resize_size}) must be at least image_size ({self.image_size}), "
                             f"or 0 to follow the weights")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field, for checkpoints and logs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build from a dict, refusing unknown keys (a typo in a recipe must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        kinds = {item.name: item.type for item in dataclasses.fields(cls)}
        return cls(**{name: read_value(name, value, kinds[name]) for name, value in values.items()})

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some fields changed (unknown names are refused)."""
        return Config.from_dict({**self.to_dict(), **overrides})

    @property
    def pretrain_small_epochs(self) -> int:
        """How many of the first pretraining epochs see smaller images (a share of them, rounded down: the last ones
        always see the captioner's size)."""
        return int(self.pretrain_epochs * self.pretrain_small_share + 1e-9)

    @property
    def pretrain_small_size(self) -> int:
        """The side of the images those epochs see (at least 16 pixels)."""
        return max(16, round(self.image_size * self.pretrain_small_scale))

    @property
    def vocab_path(self) -> Path:
        return Path(self.vocab_file) if self.vocab_file else Path(self.out) / "vocab.pkl"


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a JSON recipe of hyperparameters; errors name the file."""
    path = check_file(path, "recipe file")
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"recipe file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"recipe file {path} must hold a JSON object of hyperparameters")
    return {**flatten_sections(values, path), "recipe": str(path)}


def flatten_sections(values: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A recipe's settings as one flat dict: each section's ("model": {...}) merged in, after checking that its keys
    belong there; "_comment" keys dropped, wherever they are."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in SECTIONS:
            flat[key] = value
            continue
        if not isinstance(value, dict):
            raise ValueError(f"recipe file {path}: the section {key!r} must be an object of settings")
        misplaced = [name for name in value if not name.startswith("_") and name not in SECTIONS[key]]
        if misplaced:
            home = {name: section for section, names in SECTIONS.items() for name in names}
            where = ", ".join(f"{name} (in {home[name]!r})" if name in home else f"{name} (no such setting)"
                              for name in misplaced)
            raise ValueError(f"recipe file {path}: the section {key!r} holds {where}")
        flat.update({name: setting for name, setting in value.items() if not name.startswith("_")})
    return flat


def make_config(recipe: str | Path | None = None, check: bool = True, **overrides: Any) -> Config:
    """Defaults, then the recipe file, then explicit overrides (None values are ignored).

    check=False leaves validation to the caller: a resumed run checks its settings once merged with the checkpoint's.
    """
    values = load_recipe(recipe) if recipe else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    config = Config.from_dict(values)
    return config.validate() if check else config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config plus one --flag per Config field, defaulting to None so the recipe is not overridden."""
    parser.add_argument("--config", help="JSON recipe to start from, e.g. configs/synthetic.json")
    for item in dataclasses.fields(Config):
        if item.name == "recipe":
            continue
        flag = "--" + item.name.replace("_", "-")
        kind = _flag_reader(item.name, item.type)
        if item.type == "bool":
            parser.add_argument(flag, type=kind, metavar="{true,false}", default=None)
        else:
            parser.add_argument(flag, type=kind, default=None, choices=CHOICES.get(item.name),
                                help=f"default {item.default!r}")


def config_from_args(args: argparse.Namespace, check: bool = True) -> Config:
    """Config from parsed arguments made by add_config_arguments (check: as in make_config)."""
    names = [item.name for item in dataclasses.fields(Config) if item.name != "recipe"]
    return make_config(args.config, check=check, **{name: getattr(args, name) for name in names})


def read_value(name: str, value: Any, kind: str) -> Any:
    """value as a kind ("bool", "int", "float" or "str"), whether a notebook parameter (papermill passes -p values it
    cannot read as Python as text: "false"), a recipe's JSON value or a flag's text; ValueError naming the setting
    otherwise. The one reader of settings, so that "false" never counts as true and 1.5 epochs are not 2."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[value.strip().lower()]
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind == "int":
        number = _number(value)
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return number
    if kind == "float":
        number = _number(value)
        if number is None:
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(number)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be text, got {value!r}")
    return str(value)  # papermill reads -p data_dir 2024 as a number


BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False}


def _number(value: Any) -> int | float | None:
    """An int or float from a number or its text; None for anything else (a bool is not a number here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value.strip())
            except ValueError:
                pass
    return None


def check_range(name: str, value: int | float) -> None:
    """Refuse a numeric setting outside its RANGES, in a ValueError naming it."""
    low, high = RANGES[name]
    if not (value >= low and (high is None or value <= high)):  # NaN fails too
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def setting_flag(name: str) -> Callable[[str], Any]:
    """An argparse type for a tool's flag that sets a Config field (pretrain_encoder.py's --image-size): read and
    bounded as the field is, in argparse's one line."""
    kinds = {item.name: item.type for item in dataclasses.fields(Config)}
    reader = _flag_reader(name, kinds[name])

    def read(text: str) -> Any:
        value = reader(text)
        try:
            check_range(name, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value
    read.__name__ = kinds[name]
    return read


def read_at_least(name: str, value: Any, low: int | float, kind: str = "int") -> Any:
    """A number outside Config (a notebook's beam_size, a tool's flag) read as read_value reads settings, and refused
    below low; ValueError naming it otherwise."""
    number = read_value(name, value, kind)
    if not number >= low:  # NaN fails too
        raise ValueError(f"{name} must be at least {low}, got {value!r}")
    return number


def at_least(low: int | float, kind: str = "int") -> Callable[[str], Any]:
    """An argparse type for a numeric flag of a tool outside Config (pretrain_encoder.py): read_at_least, in
    argparse's one line."""
    def read(text: str) -> Any:
        try:
            return read_at_least("value", text, low, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ")) from None
    read.__name__ = kind
    return read


def _flag_reader(name: str, kind: str) -> Callable[[str], Any]:
    """An argparse type that reads a flag's text with read_value (argparse prints its message and exits 2)."""
    def read(text: str) -> Any:
        try:
            return read_value(name, text, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    read.__name__ = kind  # argparse names the type in some messages
    return read
