"""What coverage costs the attention decoder: its steps with and without it, alternating in one process.

    python docs/experiments/coverage_cost.py

The synthetic recipe's sizes (embed 256, hidden 512, 95 words, 1 + 36 cells, query_word), random weights and
features (timings do not depend on them): a teacher-forced cross-entropy step (forward and backward, 160 captions
of 9-16 tokens), a self-critical sampling step (160 captions of up to 24 tokens, backward through their
log-probabilities) and beam search (3) over 100 images. Medians of 5 rounds after a first one.
"""
import statistics
import time

import torch

from model import DecoderRNN  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    decoders = {coverage: DecoderRNN(256, 512, 95, attention=True, query_word=True, coverage=coverage)
                for coverage in (False, True)}
    features, captions = torch.randn(160, 37, 256), torch.randint(3, 95, (160, 16))
    captions[:, 0] = decoders[False].start_index
    lengths, images = torch.randint(9, 17, (160,)), torch.randn(100, 37, 256)

    def cross_entropy(decoder):
        decoder(features, captions, lengths).sum().backward()

    def sampling(decoder):
        decoder.sample_with_log_probs(features, 24)[1].sum().backward()

    def beam(decoder):
        with torch.no_grad():
            decoder.beam_search(images, beam_size=3, max_len=24)

    times = {(step, coverage): [] for step in (cross_entropy, sampling, beam) for coverage in (False, True)}
    for _ in range(6):
        for (step, coverage), spent in times.items():
            started = time.perf_counter()
            step(decoders[coverage])
            spent.append(time.perf_counter() - started)
    for step in (cross_entropy, sampling, beam):
        without, with_ = (statistics.median(times[step, coverage][1:]) for coverage in (False, True))
        print(f"{step.__name__}: {without * 1e3:.0f} ms without coverage, {with_ * 1e3:.0f} ms with, "
              f"{with_ / without:.2f}x")


if __name__ == "__main__":
    main()
