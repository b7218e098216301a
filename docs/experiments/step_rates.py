"""Throwaway probe behind docs/EXPERIMENTS.md, 2026-12-07 (night, sixth session): how close the demo's pretraining step
runs to the machine's matrix-product rate, and how much a narrower LSTM saves in a captioner step. Not part of the
pipeline; kept so that the figures can be re-measured. Run it alone on the cores, natively or held to AVX2:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python docs/experiments/step_rates.py [--precision fp32|bf16]

Pretraining: the demo's ResNet-18 with its heads (captioning/pretraining.py) on random images at 96 px, batch 8, 16
and 32; FLOPs counted by torch.utils.flop_counter. Captioner: the recipe's attention decoder (query word, coverage) on
random cached features (32 images, 37 cells, their 160 captions of 14 tokens), a cross-entropy step and a
self-critical sampling step (24 words) at hidden sizes 512, 384 and 256, each timed in turns, the median of four.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from captioning import pretraining
from model import DecoderRNN
from tools.cpu_capability import matmul_rate


def pretraining_step(batch: int, precision: str) -> tuple[float, float]:
    """Seconds a step and FLOPs a step of the demo's pretraining at this batch size."""
    device = torch.device("cpu")
    model, optimizer, scaler = pretraining.build("resnet18", 40, 39, 4e-3, device, precision, centres=True)
    images = torch.randn(batch, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    targets, centres = (torch.rand(batch, 40) < 0.1).float(), torch.randint(0, 40, (batch, 6, 6))
    cells = torch.softmax(torch.randn(batch, 40, 6, 6), dim=1)
    with FlopCounterMode(display=False) as counter:
        outputs = model.heads(images)
        sum(output.float().sum() for output in outputs if output is not None).backward()
    for _ in range(3):
        pretraining.train_step(model, optimizer, scaler, images, targets, cells, device, precision, centres)
    started = time.perf_counter()
    for _ in range(10):
        pretraining.train_step(model, optimizer, scaler, images, targets, cells, device, precision, centres)
    return (time.perf_counter() - started) / 10, counter.get_total_flops()


def decoder_steps() -> dict[str, dict[int, float]]:
    """Median seconds of a cross-entropy and a sampling step for each hidden size."""
    torch.manual_seed(0)
    features = torch.randn(32, 37, 256)
    captions = torch.randint(3, 95, (160, 14))
    captions[:, 0] = 1
    lengths, rows = torch.full((160,), 14), torch.arange(32).repeat_interleave(5)
    decoders = {}
    for hidden in (512, 384, 256):
        decoder = DecoderRNN(256, hidden, 95, attention=True, query_word=True, coverage=True)
        decoders[hidden] = (decoder, torch.optim.Adam(decoder.parameters(), 1e-3))

    def cross_entropy(decoder, optimizer):
        states = decoder.hidden_states(features[rows], captions, lengths)
        loss = F.cross_entropy(decoder.scores(states[:, 1:]).reshape(-1, 95), captions[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sampling(decoder, optimizer):
        _, log_probs = decoder.sample_with_log_probs(features.repeat_interleave(5, dim=0), 24)
        optimizer.zero_grad()
        (-log_probs.sum(dim=1).mean()).backward()
        optimizer.step()

    medians = {}
    for name, step in (("cross-entropy", cross_entropy), ("self-critical sampling", sampling)):
        times = {hidden: [] for hidden in decoders}
        for _ in range(4):
            for hidden, (decoder, optimizer) in decoders.items():
                started = time.perf_counter()
                for _ in range(5):
                    step(decoder, optimizer)
                times[hidden].append((time.perf_counter() - started) / 5)
        medians[name] = {hidden: statistics.median(values) for hidden, values in times.items()}
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    rate = matmul_rate(torch.float32)  # bench's reference: the best of three 2048^2 fp32 products
    print(f"capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; "
          f"2048^2 fp32 product {rate / 1e9:.0f} GFLOP/s")
    for batch in (8, 16, 32):
        seconds, flops = pretraining_step(batch, args.precision)
        print(f"pretraining, batch {batch} ({args.precision}): {seconds * 1000:.0f} ms a step, {flops / 1e9:.1f} GFLOP, "
              f"{flops / seconds / rate:.2f} of the product rate, an epoch of 3,000 images {3000 / batch * seconds:.0f} s")
    for name, medians in decoder_steps().items():
        print(f"{name} step (fp32): " + ", ".join(f"hidden {hidden} {seconds:.3f} s"
                                                   for hidden, seconds in medians.items()))


if __name__ == "__main__":
    main()
