"""Checkpoint: a plain dict of tensors and plain values, written atomically, loaded without running code.

One loader serves caption.py, evaluate.py, notebook 3 and train.py --resume. A checkpoint holds the weights, every
hyperparameter, the vocabulary, epoch/step, optimizer and scheduler state, and the metrics so far, so that
rebuilding the model needs nothing but the checkpoint's path.
"""
from __future__ import annotations

import errno
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from captioning.config import Config
from captioning.files import atomic_write, check_file
from model import DecoderRNN, EncoderCNN, build_decoder, build_encoder
from vocabulary import Vocabulary

FORMAT_VERSION = 1

# What a checkpoint holds. Enough to caption (caption.py, evaluate.py, notebook 3):
MODEL_KEYS = ("encoder", "decoder", "config", "vocab")  # state dicts, Config.to_dict(), Vocabulary.to_dict()
# Where training stands, for --resume: the run's counters as plain values...
RUN_COUNTERS = ("epoch", "batches_done", "global_step", "best_score", "stale_epochs", "fine_tuning",
                "encoder_pretrained", "history", "skipped_images", "epoch_loss_sum", "epoch_loss_steps")
# ... and the states of its optimizer, schedule, gradient scaler and random generator.
RUN_STATES = ("optimizer", "scheduler", "scaler", "torch_rng")
# Besides: "metrics" (the last epoch's scores), "world_size" (the processes it trained on, torchrun),
# "data_fingerprint" (the training annotations' SHA-256, checked on resume) and "format_version".


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit what it is combined with."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write state with torch.save to a temp file in the same folder, then rename: a crash never leaves half a file."""
    try:
        with atomic_write(path) as file:
            torch.save({**state, "format_version": FORMAT_VERSION}, file)
    except RuntimeError as error:  # torch.save's own wrapping of a failed write (a full disk: "unexpected pos ...")
        needed, free = _tensor_bytes(state), shutil.disk_usage(Path(path).parent).free
        if free < needed:  # torch's zip writer hides the ENOSPC it met
            raise OSError(errno.ENOSPC, f"No space left on device: the checkpoint needs about {needed / 2**20:.1f} MB "
                          f"and its folder has {free / 2**20:.1f} MB free; the previous one, if any, is intact",
                          str(path)) from None
        raise OSError(errno.EIO, f"could not write the checkpoint ({error}); the previous one, if any, is intact",
                      str(path)) from None


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint state: about what torch.save writes."""
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (never runs code); errors name the file and the problem."""
    path = check_file(path, "checkpoint", CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    # torch.save writes a zip archive; anything else (a truncated file, an image, a plain pickle) would otherwise
    # reach the unpickler and be reported as unsafe rather than as what it is.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint written by train.py")
    # torch.load does not check the CRC-32 that the archive records for each tensor, so a flipped byte would load
    # as a silently altered weight.
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        damaged = f"? ({error})"
    if damaged:
        raise CheckpointError(f"checkpoint {path} is damaged: its record {damaged} does not match its checksum "
                              f"(a disk or copy error); use another copy, or the run's other checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"refusing to load {path}: it holds more than tensors and plain values "
                              f"(loading it could run code). Details: {str(error).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or not a checkpoint ({error})") from None
    if not isinstance(state, dict) or any(key not in state for key in MODEL_KEYS):
        raise CheckpointError(f"{path} is not a checkpoint of this project (it lacks {', '.join(MODEL_KEYS)})")
    return state


def remove_partial_saves(folder: str | Path) -> list[Path]:
    """Delete the temp files of saves that a killed process never finished; returns what was removed."""
    stale = sorted(Path(folder).glob("*.pt*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def build_models(state: dict[str, Any], device: str | torch.device = "cpu"
                 ) -> tuple[EncoderCNN, DecoderRNN, Vocabulary, Config]:
    """Rebuild encoder, decoder, vocabulary and config from a loaded checkpoint, in eval mode on device."""
    try:
        config = Config.from_dict(state["config"]).validate()
        vocab = Vocabulary.from_dict(state["vocab"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"the checkpoint's settings or vocabulary are not usable: {error}") from None
    check_sizes(state, config, vocab)
    # The weights come from the checkpoint, so never fetch ImageNet weights here.
    encoder = build_encoder(config, pretrained="no", train_backbone="no", objects=object_classes_of(state, config))
    decoder = build_decoder(config, vocab)
    load_weights(encoder, state["encoder"], "encoder")
    load_weights(decoder, state["decoder"], "decoder")
    return encoder.to(device).eval(), decoder.to(device).eval(), vocab, config


def check_sizes(state: dict[str, Any], config: Config, vocab: Vocabulary) -> None:
    """Refuse, before any model is built, weights that are not tensors, not numbers (NaN, infinite), or whose shapes
    are not the ones the settings and vocabulary describe: a crafted checkpoint must not make us allocate a model of
    any size it names."""
    for part in ("encoder", "decoder"):
        weights = state[part]
        if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
            raise CheckpointError(f"the checkpoint's {part} weights are not tensors: not a checkpoint of this project")
        # NaN weights caption "" for every image, quietly: a model that diverged is refused, not used.
        broken = next((name for name, value in weights.items()
                       if value.is_floating_point() and not torch.isfinite(value).all()), None)
        if broken:
            raise CheckpointError(f"the checkpoint's {part} weights are not all numbers ({broken} holds NaN or "
                                  f"infinite values): the run that wrote it diverged; use an earlier checkpoint")
    expected = {("decoder", "embed.weight"): (len(vocab), config.embed_size),
                ("decoder", "lstm.weight_hh_l0"): (4 * config.hidden_size, config.hidden_size),
                ("decoder", "fc.weight"): (len(vocab), config.hidden_size),
                ("encoder", "embed.bias"): (config.embed_size,)}
    if config.object_features:  # the centre head's classes are its own; the rest must agree with them
        found = state["encoder"].get("objects.weight")
        if found is None or found.dim() != 4:
            raise CheckpointError("the checkpoint's settings say it reads a centre head (object_features), and its "
                                  "encoder weights hold none: a damaged or crafted checkpoint")
    for (part, name), shape in expected.items():
        found = state[part].get(name)
        if found is None or tuple(found.shape) != shape:
            raise CheckpointError(f"the checkpoint's {part} weights do not fit its settings and vocabulary ({name} "
                                  f"is {'missing' if found is None else tuple(found.shape)}, they describe {shape}): "
                                  f"a damaged or crafted checkpoint, or weights from another run")


def object_classes_of(state: dict[str, Any], config: Config) -> int:
    """The classes of the centre head that a checkpoint's encoder reads (0 without object_features): the checkpoint
    holds the head's weights, so no weights file is needed to rebuild it (check_sizes first)."""
    return state["encoder"]["objects.weight"].shape[0] if config.object_features else 0


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], name: str) -> None:
    """load_state_dict with a clear message when the sizes do not match (e.g. a vocabulary from another run)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    mismatched = [f"{key}: checkpoint {tuple(weights[key].shape)} vs model {tuple(own[key].shape)}"
                  for key in own if key in weights and weights[key].shape != own[key].shape]
    if missing or mismatched:
        details = "; ".join(mismatched[:3] + [f"missing {key}" for key in missing[:3]])
        raise CheckpointError(f"the {name} weights do not fit the model built from the checkpoint's settings "
                              f"and vocabulary ({details})")
    module.load_state_dict(weights)
