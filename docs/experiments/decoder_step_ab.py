"""A/B of the attention decoder's training steps from the feature cache: each step on the captions still going
(model.py) against every step on the whole batch (the way before, re-created here), alternating in one process.

    python docs/experiments/decoder_step_ab.py --data-dir data/synthetic --work /tmp/decoder_ab

Cross-entropy: the recipe's step (loop.train_step) with the teacher-forced steps on the whole batch, padding
included, against the committed way. Self-critical: loop.scst_step with sampling that carries finished captions
to max_len, against the committed way, after 60 cross-entropy steps so that captions have realistic lengths. The
CNN is a random ResNet-18 (timings do not depend on its weights); medians of rounds after the first.
"""
import argparse
import statistics
import time
from pathlib import Path

import torch

import model  # noqa: E402
from captioning import training
from captioning.training import loop, self_critical
from captioning.config import make_config  # noqa: E402
from data_loader import get_loader  # noqa: E402
from captioning.features import feature_store  # noqa: E402


def whole_batch_states(self, features, words, lengths=None):
    """Before: every step on every caption; hidden_states zeroes the padding afterwards."""
    return NEW_STATES(self, features, words, None)


def whole_batch_sampling(self, features, max_len=20):
    """Before: finished captions go on to max_len (their words <pad>, their log-probabilities 0)."""
    log_probs, state = self.init_state(features)
    finished = torch.zeros(features.size(0), dtype=torch.bool, device=features.device)
    words, chosen = [], []
    for _ in range(max_len):
        word = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
        chosen.append(log_probs.gather(1, word.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0))
        word = word.masked_fill(finished, self.pad_index)
        words.append(word)
        finished = finished | (word == self.end_index)
        if finished.all():
            break
        log_probs, state = self.step(word, state)
    return torch.stack(words, dim=1), torch.stack(chosen, dim=1)


NEW_STATES = model.DecoderRNN.attentive_states
NEW_SAMPLING = model.DecoderRNN.sample_with_log_probs


def timed(step, batches, rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds a step, each way, alternating rounds; the first round of each is not counted."""
    times = {"whole batch": [], "captions still going": []}
    for index in range(rounds):
        for name in times:
            use_whole = name == "whole batch"
            model.DecoderRNN.attentive_states = whole_batch_states if use_whole else NEW_STATES
            model.DecoderRNN.sample_with_log_probs = whole_batch_sampling if use_whole else NEW_SAMPLING
            started = time.perf_counter()
            for batch in batches[index * per_round:(index + 1) * per_round]:
                step(batch)
            times[name].append((time.perf_counter() - started) / per_round)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--work", required=True, help="a new folder for the run's vocabulary and feature cache")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=4)
    args = parser.parse_args()
    work = Path(args.work)
    config = make_config(Path(__file__).resolve().parents[2] / "configs" / "synthetic.json", data_dir=args.data_dir,
                         pretrain_epochs=0, pretrained="no", train_backbone="no", out=str(work / "run"))
    run = training.build_run(config)
    store = feature_store(run.encoder, config, config.train_split, run.device, cache_dir=work / "features",
                          progress=False)
    loader = get_loader(None, mode="train", batch_size=config.batch_size, data_dir=config.data_dir,
                        split=config.train_split, vocab=run.vocab, features=store, seed=0)
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch
    needed = args.rounds * args.per_round
    ce = [next(batches) for _ in range(needed)]
    ratio = statistics.mean(b.lengths.float().mean().item() / b.lengths.max().item() for b in ce)
    run.encoder.train()
    run.decoder.train()
    ce_times = timed(lambda batch: loop.train_step(run, batch), ce, args.rounds, args.per_round)
    for _ in range(60):
        loop.train_step(run, next(batches))
    run.epoch = config.epochs  # the self-critical phase
    self_critical.start_scst(run, loader)
    scst = [next(batches) for _ in range(needed)]
    scst_times = timed(lambda batch: loop.scst_step(run, batch), scst, args.rounds, args.per_round)
    print(f"{args.data_dir}: mean caption length / longest in its batch {ratio:.2f}; "
          f"{config.batch_size} images a batch, {torch.get_num_threads()} threads")
    for phase, times in (("cross-entropy", ce_times), ("self-critical", scst_times)):
        old, new = times["whole batch"], times["captions still going"]
        print(f"{phase:14s} whole batch {old * 1000:6.0f} ms/step, captions still going {new * 1000:6.0f} ms/step:"
              f" {old / new:.2f}x")


if __name__ == "__main__":
    main()
