"""The CNN's weights: torchvision's ResNets, their ImageNet weights (by name, or a local file holding them), the
resize they were evaluated with, and the centre head a weights file from pretrain_encoder.py may hold beside them."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from captioning.files import check_file, sha256_file

STAGES = ("layer1", "layer2", "layer3", "layer4")  # ResNet stages, shallow to deep
OBJECT_HEAD = "centres."  # prefix of the centre head's weights in a file from pretrain_encoder.py


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights were asked for and cannot be had (offline, no cached copy)."""


def imagenet_weights(backbone: str, name: str = "DEFAULT") -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights entry for a ResNet, by name: DEFAULT (ResNet50_Weights.IMAGENET1K_V2 for a
    ResNet-50), IMAGENET1K_V1 or IMAGENET1K_V2."""
    weights = torchvision.models.get_model_weights(backbone)
    if name not in weights.__members__:
        raise ValueError(f"{backbone} has no ImageNet weights called {name!r}: give one of "
                         f"{', '.join(weights.__members__)}, or the path of a weights file")
    return weights[name]


def weights_cache_path(backbone: str, name: str = "DEFAULT") -> Path:
    """Where torchvision looks for (and downloads) the backbone's weights file."""
    file_name = os.path.basename(imagenet_weights(backbone, name).url)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def is_weights_name(weights: str) -> bool:
    """Whether a `weights` setting names torchvision weights (IMAGENET1K_V1, DEFAULT, ...) rather than a file."""
    return weights == "DEFAULT" or weights.startswith("IMAGENET")


def _sha256(path: Path) -> str:
    return sha256_file(path)


def weights_of_file(backbone: str, path: Path) -> torchvision.models.WeightsEnum | None:
    """Which of torchvision's weights a local file holds, by its content (torchvision names each file after the
    start of its SHA-256, e.g. resnet50-11ad3fa6.pth); None for a file of other weights."""
    digest = _sha256(path)
    for entry in torchvision.models.get_model_weights(backbone):
        prefix = os.path.basename(entry.url).rsplit("-", 1)[-1].split(".")[0]
        if digest.startswith(prefix):
            return entry
    return None


def weights_entry(backbone: str, weights: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights a setting stands for: the named ones, or those a local file holds (a file of other
    weights is preprocessed like the default ones). Raises ValueError for a missing file or an unknown name."""
    if is_weights_name(weights):
        return imagenet_weights(backbone, weights)
    path = check_file(weights, "the weights file")
    if not path.is_file():
        raise ValueError(f"the weights file {path} does not exist (weights is a file or one of torchvision's names: "
                         f"DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2)")
    return weights_of_file(backbone, path) or imagenet_weights(backbone)


def weights_resize(backbone: str, weights: str, image_size: int) -> int:
    """The shorter side to resize to before the image_size crop, as the weights were evaluated: 232 for a 224 crop
    with ResNet-50's V2 weights, 256 with V1 (scaled for other crop sizes)."""
    transforms = weights_entry(backbone, weights).transforms()
    return round(image_size * transforms.resize_size[0] / transforms.crop_size[0])


def load_backbone(backbone: str, pretrained: str, weights: str = "DEFAULT") -> tuple[nn.Module, bool]:
    """A torchvision ResNet and whether it got ImageNet weights, following pretrained = yes / no / auto; weights
    names torchvision's weights (downloaded into the torch hub cache) or a local file holding them."""
    model = torchvision.models.get_model(backbone, weights=None)
    if pretrained == "no":
        return model, False
    if not is_weights_name(weights):
        return _load_weights_file(model, backbone, Path(weights)), True
    entry = imagenet_weights(backbone, weights)
    try:
        state_dict = entry.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as error:  # offline, blocked, corrupt cache file: all end the same way for the user
        cache = weights_cache_path(backbone, weights)
        message = (f"could not load the ImageNet weights for {backbone} ({entry}): {error}. "
                   f"To work offline, give the weights file with --weights FILE, or copy "
                   f"{os.path.basename(entry.url)} from a machine that has it to {cache} (or set TORCH_HOME), "
                   f"or pass --pretrained no.")
        if pretrained == "yes":
            raise PretrainedWeightsUnavailable(message) from None
        warnings.warn("\n" + "!" * 80 + f"\nPRETRAINED WEIGHTS UNAVAILABLE, USING RANDOM INITIALISATION.\n{message}\n"
                      + "!" * 80, stacklevel=2)
        return model, False
    model.load_state_dict(state_dict)
    return model, True


def _load_weights_file(model: nn.Module, backbone: str, path: Path) -> nn.Module:
    """Load a torchvision state dict from a local file (tensors only: a file that would run code is refused). The
    classifier (fc) may be left out, as `pretrain_encoder.py` leaves it: the captioner drops it anyway; the centre
    head that file may hold beside the ResNet (object_head_of) is not the ResNet's."""
    if not check_file(path, "the weights file", PretrainedWeightsUnavailable).is_file():
        raise PretrainedWeightsUnavailable(f"the weights file {path} does not exist: fix --weights")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith(OBJECT_HEAD)}
        if not any(key.startswith("fc.") for key in state_dict):  # a feature extractor's weights: no classifier
            state_dict = {**state_dict, **{f"fc.{key}": value for key, value in model.fc.state_dict().items()}}
        model.load_state_dict(state_dict)
    except Exception as error:  # not a state dict, another architecture, a pickle with code, a truncated file
        if not _looks_saved_by_torch(path):  # torch.load's own words for a text file are a zip reader's "(101)"
            raise PretrainedWeightsUnavailable(f"{path} is not a file torch.save wrote (neither its zip archive nor "
                                               f"a pickle): give a state dict of {backbone} weights") from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PretrainedWeightsUnavailable(f"{path} does not hold {backbone} weights as a torchvision state dict "
                                           f"({first_line})") from None
    broken = next((key for key, value in state_dict.items()
                   if value.is_floating_point() and not torch.isfinite(value).all()), None)
    if broken is not None:  # training from it would diverge at once, and the message would blame the learning rate
        raise PretrainedWeightsUnavailable(f"{path} holds NaN or infinite numbers (in {broken}): these weights "
                                           f"are broken; give other weights")
    return model


def _looks_saved_by_torch(path: Path) -> bool:
    """Whether a file starts as torch.save's output does: a zip archive (PK), or a legacy pickle (protocol byte)."""
    with open(path, "rb") as file:
        start = file.read(2)
    return start[:2] == b"PK" or start[:1] == b"\x80"


def object_head_of(path: str | Path) -> dict[str, torch.Tensor]:
    """The centre head that `pretrain_encoder.py` saves beside the ResNet in its weights file (keys "centres.weight"
    and "centres.bias", of a 1x1 convolution on layer3's map), without the prefix; empty if the file has none."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedWeightsUnavailable(f"could not read {path}: {error}") from None
    return {key[len(OBJECT_HEAD):]: value for key, value in state_dict.items() if key.startswith(OBJECT_HEAD)}


def object_classes(weights: str) -> int:
    """How many classes the centre head in a weights file names (pairs + 1), for EncoderCNN(objects=...);
    PretrainedWeightsUnavailable when weights is not such a file."""
    head = {} if is_weights_name(weights) or not Path(weights).is_file() else object_head_of(weights)
    if "weight" not in head:
        raise PretrainedWeightsUnavailable(f"object_features reads the centre head that `pretrain_encoder.py "
                                           f"--centres` saves with the CNN, and {weights} has none: give such a "
                                           f"file with --weights, or let the run pretrain its CNN (pretrain_epochs)")
    return head["weight"].shape[0]


def zero_init_residual(resnet: nn.Module) -> None:
    """Zero the last BatchNorm scale of every residual branch, so that each block starts as the identity.

    What torchvision's zero_init_residual=True does (Goyal et al. 2017). For a ResNet trained from scratch it is the
    difference between learning in a few epochs and barely at all (docs/EXPERIMENTS.md, 2026-11-26).
    Only for random initialisation: pretrained weights are left as they are.
    """
    for module in resnet.modules():
        if isinstance(module, torchvision.models.resnet.Bottleneck):
            nn.init.zeros_(module.bn3.weight)
        elif isinstance(module, torchvision.models.resnet.BasicBlock):
            nn.init.zeros_(module.bn2.weight)


def layer3_side(image_size: int) -> int:
    """Side of a ResNet's layer3 map for an image of image_size pixels: conv1, the max pool, layer2 and layer3 each
    halve it, rounding up (14 at 224 px, 6 at 96 px)."""
    return stage_side(image_size, "layer3")


def stage_side(image_size: int, stage: str) -> int:
    """Side of a ResNet stage's map for an image of image_size pixels: conv1 and the max pool halve it, then each
    stage after layer1 (rounding up): layer3 14 and layer4 7 at 224 px."""
    for _ in range(2 + STAGES.index(stage)):
        image_size = -(-image_size // 2)
    return image_size
