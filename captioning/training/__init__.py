"""Training a captioner, along its seams: the run and its models (run.py), the cross-entropy step (losses.py), the
self-critical step (self_critical.py), learning-rate schedules (schedules.py), the run folder (run_folder.py: files,
lock, log, signals), --resume (resume.py), the CNN's pretraining stage (pretrained.py), and the epoch loop (loop.py).

`train(config)` is what train.py and the notebooks call.
"""
from captioning.training.loop import format_duration, train
from captioning.training.run import Run, TrainingFailed, build_run
from captioning.training.run_folder import LOCK_NAME, LOG_NAME, PRETRAINED_CONFIG, PRETRAINED_NAME, read_log

__all__ = ["LOCK_NAME", "LOG_NAME", "PRETRAINED_CONFIG", "PRETRAINED_NAME", "Run", "TrainingFailed", "build_run",
           "format_duration", "read_log", "train"]
