"""Training: config -> vocabulary, loaders, encoder + decoder -> checkpoints (last.pt, best.pt) and a training log.

    python train.py --config configs/synthetic.json --data-dir data/synthetic --out models/
    python train.py --config configs/synthetic.json --out models/ --resume
    torchrun --standalone --nproc_per_node 2 train.py --config configs/synthetic.json --out models/

Under torchrun the processes train one model with DistributedDataParallel (captioning/distributed.py); batch_size is
the global batch. This file parses the command line and turns errors into exit codes; the training itself is
captioning/training/ (`train(config)` there is what the notebooks call).
"""
from __future__ import annotations

from captioning.interrupts import quiet_interrupts

if __name__ == "__main__":  # before torch loads, which takes seconds: a Ctrl-C then ends the command quietly
    quiet_interrupts()

import argparse
import dataclasses
import pickle
import signal
import sys

from captioning import distributed
from captioning.checkpoint import CheckpointError
from captioning.config import Config, add_config_arguments, config_from_args
from captioning.runtime import resolve_device
from captioning.training import TrainingFailed, train
from captioning.backbone import PretrainedWeightsUnavailable


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --out folder that holds another run's checkpoints, replacing them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.add_argument("--captions-only", action="store_true",
                        help="learn from the captions alone, for a set without instance annotations: no pretraining "
                             "of the CNN on the objects (pretrain_epochs 0) and no object_features, which read it")
    args = parser.parse_args(argv)
    if args.captions_only:
        if args.pretrain_epochs or args.object_features:
            parser.error("--captions-only turns off --pretrain-epochs and --object-features: give one or the other")
        args.pretrain_epochs, args.object_features = 0, False
    # SIGTERM (e.g. a job scheduler) is treated like Ctrl-C: save and stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    given = [item.name for item in dataclasses.fields(Config) if getattr(args, item.name, None) is not None]
    try:
        config = config_from_args(args, check=False)  # train() checks it, merged with last.pt when resuming
        with distributed.process_group(resolve_device(config.device).type):  # under torchrun only
            try:
                train(config, resume=args.resume, progress=not args.no_progress, given=given,
                      overwrite=args.overwrite)
            except RuntimeError as error:  # said while a SIGTERM from torchrun, which follows, only sets a flag
                if not distributed.peer_lost(error):
                    raise
                print(f"error: another process of this torchrun job stopped, so this one (rank {distributed.rank()})"
                      f" stops too; {config.out}/last.pt holds the run's last saved point: run the same command "
                      f"with --resume to continue", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 130
    except distributed.PeerFailed:  # rank 0 reports the error
        return 2
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except PretrainedWeightsUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, CheckpointError, pickle.UnpicklingError) as error:  # the last: --vocab-file
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. --out names a file, a full disk, no permission: the environment, not a bug
        print(f"error: {error.strerror or error}: {error.filename or 'file system'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
