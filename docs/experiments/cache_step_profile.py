"""Where a training step from the feature cache spends its time (bench.py section 1's step), against what the CPU can
do: the step's profile, the matrix-product peak of this machine, and two other ways of running the LSTM.

    python docs/experiments/cache_step_profile.py

Builds bench.py's setting (96 synthetic images, ResNet-50 features cached, 16 images and their 80 captions a batch,
a vocabulary padded to 10,000 words, the pooled decoder), then prints:
- the mean step time and the torch profiler's top operators over 10 steps;
- the GFLOP/s of a 1000 x 512 x 10,000 matrix product (about the output layer's size) and the step's arithmetic;
- the LSTM's forward and backward over the padded batch (as the decoder runs it), in chunks over the captions still
  going (longest first, a chunk where the number of captions still going falls below 3/4, 1/2, 1/4 of the batch),
  and with oneDNN switched off (PyTorch's own kernel); alternating rounds, medians.
"""
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tools import bench  # noqa: E402
from prepare import synthetic  # noqa: E402
from captioning import training
from captioning.training import loop
from data_loader import get_loader  # noqa: E402
from captioning.features import feature_store  # noqa: E402


def timed(function, repeats: int = 10) -> float:
    """Milliseconds per call, after two warm-up calls."""
    for _ in range(2):
        function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000


def lstm_ways(lstm: torch.nn.LSTM, lengths: torch.Tensor, embed: int) -> dict:
    """Forward + backward of the LSTM over (captions, longest, embed) inputs, three ways: name -> function."""
    batch, steps = len(lengths), int(lengths.max())
    inputs = torch.randn(batch, steps, embed, requires_grad=True)
    upstream = torch.randn(batch, steps, lstm.hidden_size)
    real = (torch.arange(steps) < lengths.unsqueeze(1)).unsqueeze(-1)

    def padded() -> None:
        (lstm(inputs)[0] * real * upstream).sum().backward()

    def chunked() -> None:
        ordered, order = lengths.sort(descending=True, stable=True)
        going = [(ordered > step).sum().item() for step in range(steps)]
        bounds = sorted({0, steps} | {next((s for s in range(steps) if going[s] <= share * batch), steps)
                                      for share in (0.75, 0.5, 0.25)})
        outputs, state = [], None
        for start, stop in zip(bounds, bounds[1:]):
            rows = going[start]
            if state is not None:
                state = (state[0][:, :rows], state[1][:, :rows])
            output, state = lstm(inputs[order][:rows, start:stop], state)
            outputs.append(F.pad(output, (0, 0, 0, 0, 0, batch - rows)))
        unsort = torch.empty_like(order)
        unsort[order] = torch.arange(batch)
        (torch.cat(outputs, 1)[unsort] * real * upstream).sum().backward()

    def without_onednn() -> None:
        with torch.backends.mkldnn.flags(enabled=False):
            padded()

    return {"padded batch (the decoder's way)": padded, "chunks over the captions still going": chunked,
            "padded, PyTorch's own kernel": without_onednn}


def main() -> None:
    settings, device = bench.BenchSettings(), torch.device("cpu")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        synthetic.generate(work / "data", n_train=settings.images, n_val=0, n_test=0, seed=0,
                                width=settings.width, height=settings.height)
        config = bench.bench_config(settings, work / "data", work, "cpu", "no")
        vocab = bench.padded_vocabulary(config, settings.vocab_size)
        run = training.build_run(config, vocab)
        store = feature_store(run.encoder, config, config.train_split, device, cache_dir=work / "features",
                              progress=False)
        loader = get_loader(None, mode="train", batch_size=config.batch_size, data_dir=config.data_dir,
                            split=config.train_split, vocab=vocab, features=store, seed=config.seed)
        batches = bench.endless(loader)
        run.encoder.train()
        run.decoder.train()
        steps = [next(batches) for _ in range(10)]
        for batch in steps[:3]:
            loop.train_step(run, batch)
        started = time.perf_counter()
        for batch in steps:
            loop.train_step(run, batch)
        step_ms = (time.perf_counter() - started) / len(steps) * 1000
        words = statistics.mean((batch.captions[:, 1:] != vocab.pad_index).sum().item() for batch in steps)
        longest = statistics.mean(batch.lengths.max().item() for batch in steps)
        print(f"{torch.get_num_threads()} threads; a step: {step_ms:.0f} ms, {steps[0].captions.size(0)} captions, "
              f"{words:.0f} scored words, longest caption {longest:.1f} (mean over 10 batches)")
        with torch.profiler.profile() as profile:
            for batch in steps:
                loop.train_step(run, batch)
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

        left, right = torch.randn(1000, 512), torch.randn(10000, 512)
        peak = 2 * 1000 * 512 * 10000 / (timed(lambda: left @ right.t(), 20) / 1000) / 1e9
        hidden, embed = config.hidden_size, config.embed_size
        output_gflop = 3 * 2 * words * hidden * len(vocab) / 1e9  # forward and the two backward products
        lstm_gflop = 3 * 2 * steps[0].captions.size(0) * longest * 4 * hidden * (hidden + embed) / 1e9
        print(f"matrix product 1000 x 512 x 10000: {peak:.0f} GFLOP/s; a step's output layer {output_gflop:.1f} "
              f"GFLOP and LSTM {lstm_gflop:.1f} GFLOP: at least {(output_gflop + lstm_gflop) / peak * 1000:.0f} ms")

        lengths = torch.cat([batch.lengths for batch in steps[:1]])
        ways = lstm_ways(run.decoder.lstm, lengths, embed)
        rounds = {name: [] for name in ways}
        for _ in range(3):
            for name, function in ways.items():
                rounds[name].append(timed(function))
        for name, times in rounds.items():
            print(f"LSTM forward + backward, {name}: {statistics.median(times):.1f} ms (rounds: "
                  + ", ".join(f"{value:.1f}" for value in times) + ")")


if __name__ == "__main__":
    main()
