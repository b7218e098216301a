"""COCO-scale rehearsal: a synthetic MS COCO 2014 at full scale, served on loopback, through every documented command.

Prepare, train (stopped and resumed in each phase) and evaluate run as the docs say, each timed and measured.

    python tools/rehearse_coco.py --work /tmp/rehearsal [--scale 1.0] [--steps 200] [--num-workers 2]
        [--recipe configs/coco_attention.json]

The stand-in (under WORK/source/): 82,783 train and 40,504 val JPEGs named COCO_train2014_%012d.jpg and
COCO_val2014_%012d.jpg inside train2014.zip / val2014.zip (top folders train2014/ and val2014/, as served under
/zips/), captions_{train,val}2014.json inside annotations_trainval2014.zip (under /annotations/), with five captions
per image and a few with six or seven, like the real files (~414k and ~203k), and Karpathy's dataset_coco.json
(splits train, restval, val 5,000, test 5,000). Each caption is a true easy-synthetic-set caption of the drawn
scene followed by a few words drawn from a Zipf law over made-up words, calibrated so that the Karpathy training
captions give about 10,000 words at threshold 5, as real COCO does. --scale shrinks every count (not the Zipf law).

The commands run as separate processes against a loopback HTTP server, with the stand-in's own SHA-256 and sizes
passed through --checksums (verification stays on):
  prepare   prepare_data.py coco --base-url URL --checksums FILE --karpathy-split dataset_coco.json
  train     train.py --config configs/coco.json (or --recipe), the CNN shrunk by flags (ResNet-18 at 56 px, random
            weights saved as a local weights file where train.py takes one: see shrink_flags), two epochs bounded to
            --steps steps each: frozen (cached features) then fine-tuning the last ResNet stage, or, for a recipe
            with self-critical epochs (configs/coco_attention.json), one cross-entropy epoch from the cache then one
            self-critical epoch (its reward's document frequencies counted over the training captions first); each
            stopped by SIGTERM half-way and resumed with --resume
  evaluate  evaluate.py --split karpathy_test --beam-size 3
Each runs the project's own entry point (train.main, ...) inside a small wrapper that times the functions that
matter (vocabulary, token cache, feature extraction, one training or self-critical step, the reward's set-up,
validation, captioning, scoring) without
changing them. Peak memory: the largest process's peak RSS (wait4), and the peak PSS summed over the process and its
DataLoader workers (Linux /proc). The table is printed and written to WORK/rehearsal.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import http.server
import inspect
import io
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from captioning.config import load_recipe
from captioning.files import sha256_file

ROOT = Path(__file__).resolve().parents[1]  # the repository, where the documented commands are
# MS COCO 2014 (captions_train2014.json / captions_val2014.json) and Karpathy's split of it.
COCO_TRAIN_IMAGES, COCO_VAL_IMAGES = 82_783, 40_504
KARPATHY_VAL, KARPATHY_TEST = 5_000, 5_000
EXTRA_CAPTIONS = {6: 0.002, 7: 0.0004}  # a few images have six or seven captions (414,113 for 82,783 images)
VOCAB_TARGET = 10_000  # words seen at least 5 times in the Karpathy training captions, as with real COCO
ZIPF_WORDS = 30_000  # made-up words the caption tails draw from (real COCO's captions use ~27k distinct words)
TAIL_WORDS = (0, 5)  # each caption ends with this many (inclusive) Zipf words
IMAGE_SIZES = ((80, 60), (60, 80), (72, 72), (80, 54))  # small JPEGs, landscape, portrait and square like COCO's
STOP_VARIABLE = "REHEARSE_COCO_STOP"  # "<phase>:<n>": the train stage sends itself SIGTERM after that step
NO_JAVA_VARIABLE = "REHEARSE_COCO_NO_JAVA"  # "1": evaluate scores as on a machine without Java (the test's choice)
MARKER = ".rehearse_coco"  # inside WORK: the folder is this tool's and may be cleared by it
# What a stage's process runs:
BOOTSTRAP = "import sys; from tools import rehearse_coco; sys.exit(rehearse_coco.timed_main())"
GENERATOR_VERSION = 3  # bump when the stand-in or its stand_in.json changes
RECIPE = ROOT / "configs" / "coco.json"


class RehearsalError(Exception):
    """A stage failed or the work folder cannot be used; reported as one sentence."""


# --------------------------------------------------------------------------- the stand-in's language


def made_up_words(count: int, seed: int = 0) -> list[str]:
    """count distinct lower-case pseudo-words (letters only, so every tokenizer keeps them whole)."""
    rng = random.Random(seed)
    onsets, vowels, codas = "bcdfghjklmnprstvwz", "aeiou", ["", "n", "r", "s", "l", "k", "m"]
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = rng.randint(2, 4)
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        words[word] = None
    return list(words)


def expected_vocabulary(exponent: float, tokens: float, words: int = ZIPF_WORDS, threshold: int = 5) -> float:
    """Expected number of Zipf words seen at least threshold times among tokens draws (Poisson counts)."""
    rates = tokens * zipf_probabilities(exponent, words)
    below = np.zeros_like(rates)
    term = np.exp(-rates)
    for k in range(threshold):  # P(count < threshold) = sum_k e^-r r^k / k!
        below += term
        term = term * rates / (k + 1)
    return float(np.sum(1.0 - below))


def zipf_probabilities(exponent: float, words: int = ZIPF_WORDS) -> np.ndarray:
    """P(rank i) proportional to i^-exponent."""
    weights = np.arange(1, words + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


@functools.lru_cache(maxsize=1)
def zipf_exponent(target: int = VOCAB_TARGET) -> float:
    """The Zipf exponent that gives about target tail words at threshold 5 in the full-scale Karpathy train split
    (the true captions add ~100 words of their own). Computed for full scale: --scale changes counts, not language."""
    karpathy_train = (COCO_TRAIN_IMAGES + COCO_VAL_IMAGES - KARPATHY_VAL - KARPATHY_TEST) * 5
    tokens = karpathy_train * sum(TAIL_WORDS) / 2
    low, high = 0.5, 3.0
    for _ in range(60):  # more words pass the threshold as the exponent falls
        middle = (low + high) / 2
        low, high = (middle, high) if expected_vocabulary(middle, tokens) > target - 100 else (low, middle)
    return (low + high) / 2


# --------------------------------------------------------------------------- images and captions


def make_images(task: tuple[str, list[int], int]) -> list[dict]:
    """Draw, encode and caption one chunk of images (a worker process's unit of work)."""
    from prepare.synthetic import easy
    from prepare.synthetic.common import JPEG_QUALITY  # the drawing and captioning code of the built-in synthetic set

    split, image_ids, seed = task
    words = _language()
    cumulative = np.cumsum(zipf_probabilities(zipf_exponent()))
    records = []
    for image_id in image_ids:
        rng = np.random.default_rng([seed, image_id])
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        scene = easy.sample_scene(rng, width, height)
        buffer = io.BytesIO()
        easy.draw_scene(rng, scene).save(buffer, "JPEG", quality=JPEG_QUALITY)
        count = 5 + sum(rng.random() < probability for probability in EXTRA_CAPTIONS.values())
        captions = [_with_tail(rng, caption, words, cumulative)
                    for caption in easy.caption_scene(rng, scene, count)]
        records.append({"id": image_id, "file_name": f"COCO_{split}2014_{image_id:012d}.jpg", "width": width,
                        "height": height, "jpeg": buffer.getvalue(), "captions": captions})
    return records


@functools.lru_cache(maxsize=1)
def _language() -> list[str]:
    return made_up_words(ZIPF_WORDS)


def _with_tail(rng: np.random.Generator, caption: str, words: list[str], cumulative: np.ndarray) -> str:
    """The caption with a few Zipf words before its final period."""
    count = int(rng.integers(TAIL_WORDS[0], TAIL_WORDS[1] + 1))
    ranks = np.searchsorted(cumulative, rng.random(count))
    tail = " ".join(words[min(int(rank), len(words) - 1)] for rank in ranks)
    if not tail:
        return caption
    period = caption.endswith(".")
    return f"{caption.rstrip('.')} {tail}{'.' if period else ''}"


def karpathy_tokens(caption: str) -> list[str]:
    """Tokens as in Karpathy's dataset_coco.json: lower case, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


# --------------------------------------------------------------------------- writing the stand-in


def plan_ids(scale: float, seed: int) -> dict[str, list[int]]:
    """Distinct image ids, scattered over COCO's id range like the real ones, for train and val."""
    n_train, n_val = max(round(COCO_TRAIN_IMAGES * scale), 1), max(round(COCO_VAL_IMAGES * scale), 3)
    ids = random.Random(seed).sample(range(1, 581_930), n_train + n_val)
    return {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:])}


def generate(source: Path, scale: float, seed: int, workers: int) -> dict[str, Any]:
    """Write the official archives, Karpathy's file and a checksums file under source; returns counts."""
    ids = plan_ids(scale, seed)
    (source / "zips").mkdir(parents=True, exist_ok=True)
    (source / "annotations").mkdir(parents=True, exist_ok=True)
    captions, counts = {}, {}
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        for split in ("train", "val"):
            captions[split] = _write_image_zip(pool, source / "zips" / f"{split}2014.zip", split, ids[split], seed)
            counts[f"{split}_images"] = len(ids[split])
            counts[f"{split}_captions"] = sum(len(item["captions"]) for item in captions[split])
    _write_annotations_zip(source / "annotations" / "annotations_trainval2014.zip", captions)
    karpathy = karpathy_entries(captions, scale, seed)
    (source / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    for split in ("train", "restval", "val", "test"):
        entries = [entry for entry in karpathy if entry["split"] == split]
        counts[f"karpathy_{split}"] = len(entries)
        counts[f"karpathy_{split}_captions"] = sum(len(entry["sentences"]) for entry in entries)
    checksums = {path.name: {"sha256": sha256_file(path), "size": path.stat().st_size}
                 for path in sorted(source.glob("*/*.zip"))}
    (source / "checksums.json").write_text(json.dumps(checksums, indent=1))
    return counts


def _write_image_zip(pool, path: Path, split: str, image_ids: list[int], seed: int) -> list[dict]:
    """The image archive (top folder <split>2014/, as the real one); returns the images' records without pixels."""
    chunk = 500
    tasks = [(split, image_ids[start:start + chunk], seed) for start in range(0, len(image_ids), chunk)]
    records = []
    temporary = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{split}2014/", b"")  # the real archives list their folder first
        for chunk_records in pool.imap(make_images, tasks):
            for record in chunk_records:
                archive.writestr(f"{split}2014/{record.pop('file_name')}", record.pop("jpeg"))
                records.append(record)
    os.replace(temporary, path)
    return records


def _write_annotations_zip(path: Path, captions: dict[str, list[dict]]) -> None:
    """annotations_trainval2014.zip: captions files in the real layout, and stand-ins for the files not used."""
    annotation_id = iter(random.Random(1).sample(range(1, 1_000_000), sum(
        len(item["captions"]) for records in captions.values() for item in records)))
    temporary = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for split, records in captions.items():
            images = [{"license": 1, "file_name": f"COCO_{split}2014_{item['id']:012d}.jpg",
                       "coco_url": f"http://images.cocodataset.org/{split}2014/COCO_{split}2014_{item['id']:012d}.jpg",
                       "height": item["height"], "width": item["width"], "date_captured": "2013-11-14 16:28:13",
                       "flickr_url": "http://farm0.staticflickr.com/0/0.jpg", "id": item["id"]}
                      for item in records]
            annotations = [{"image_id": item["id"], "id": next(annotation_id), "caption": caption}
                           for item in records for caption in item["captions"]]
            data = {"info": {"description": "rehearse_coco.py stand-in for COCO 2014", "year": 2014},
                    "images": images, "licenses": [{"url": "", "id": 1, "name": "stand-in"}],
                    "annotations": annotations}
            archive.writestr(f"annotations/captions_{split}2014.json", json.dumps(data))
            # In the real archive, never extracted. The instance files are left out: empty ones would not be COCO
            # instance files, and without them prepare_data.py warns and evaluate.py reports no CHAIR.
            archive.writestr(f"annotations/person_keypoints_{split}2014.json", "{}")
    os.replace(temporary, path)


def karpathy_entries(captions: dict[str, list[dict]], scale: float, seed: int) -> list[dict]:
    """Karpathy's dataset_coco.json images: all of train2014 is train; val2014 gives val, test and restval."""
    val = list(captions["val"])
    random.Random(seed + 1).shuffle(val)
    n_val = n_test = max(round(KARPATHY_VAL * scale), 1)
    splits = [("train2014", "train", item) for item in captions["train"]]
    splits += [("val2014", "val" if index < n_val else "test" if index < n_val + n_test else "restval", item)
               for index, item in enumerate(val)]
    entries, sentence_id = [], 0
    for image_index, (folder, split, item) in enumerate(splits):
        sentences = []
        for caption in item["captions"]:
            sentences.append({"tokens": karpathy_tokens(caption), "raw": caption, "imgid": image_index,
                              "sentid": sentence_id})
            sentence_id += 1
        entries.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences],
                        "filename": f"COCO_{folder}_{item['id']:012d}.jpg", "imgid": image_index, "split": split,
                        "sentences": sentences, "cocoid": item["id"]})
    return entries


# --------------------------------------------------------------------------- loopback server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve folder on 127.0.0.1 (a free port) from a daemon thread; returns the server and its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --------------------------------------------------------------------------- timing inside a stage's process


class Timings:
    """Appends one JSON line per timed call to a file (read back by the rehearsal while and after a stage runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.call_start = 0.0  # when the call being described started

    def record(self, entry: dict[str, Any]) -> None:
        peak = _megabytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        with open(self.path, "a") as file:
            file.write(json.dumps({**entry, "peak_rss_mb": round(peak, 1)}) + "\n")

    def wrap(self, owner: Any, name: str, event: str, describe: Callable[..., dict] | None = None,
             after: Callable[[dict], None] | None = None) -> None:
        """Replace owner.name by a timed version that records event (and describe(arguments, result)), then calls
        after(entry) once the entry is on disk."""
        original = inspect.getattr_static(owner, name, None)
        if original is None:
            self.record({"event": "not_timed", "name": f"{getattr(owner, '__name__', owner)}.{name}"})
            return
        is_classmethod = isinstance(original, classmethod)
        function = original.__func__ if is_classmethod else original
        signature = inspect.signature(function)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            result = function(*args, **kwargs)
            self.call_start = start  # for describe (a nested timed call has set its own meanwhile)
            extra = describe(signature.bind(*args, **kwargs).arguments, result) if describe else {}
            entry = {"event": event, "start": start, "seconds": time.time() - start, **extra}
            self.record(entry)
            if after is not None:
                after(entry)
            return result
        setattr(owner, name, classmethod(timed) if is_classmethod else timed)


def timed_main() -> int:
    """Entry point of a stage's process: attach the timers, then run the command's own main(argv). The commands are
    scripts at the repository's top, the stage's working directory, so they are imported here, in that process."""
    command, timings_path, *argv = sys.argv[1:]
    timings = Timings(Path(timings_path))
    if command == "prepare_data.py":
        import prepare_data
        from prepare import coco_download
        timings.wrap(coco_download, "fetch_verified", "download_verify",
                     lambda a, r: {"archive": a["archive"].name, "bytes": r.stat().st_size})
        timings.wrap(coco_download, "extract_archive", "extract", lambda a, r: {"archive": a["archive"].name})
        timings.wrap(coco_download, "write_karpathy_split", "karpathy_split")
        return prepare_data.main(argv)
    if command == "train.py":
        return _timed_train(timings, argv)
    if command == "evaluate.py":
        import evaluate
        from captioning import inference, metrics
        timings.wrap(inference.Captioner, "caption_split", "captioning",
                     lambda a, r: {"images": len(r[0]), "beam_size": a.get("beam_size", 1)})
        timings.wrap(metrics, "score_captions", "scoring", lambda a, r: {"images": len(a["candidates"])})
        timings.wrap(metrics, "best_constant_caption", "baseline_caption")
        if os.environ.get(NO_JAVA_VARIABLE) == "1":  # METEOR skipped, Python PTB tokenizer: a JVM start saved
            metrics.java_available = lambda: False
        return evaluate.main(argv)
    raise SystemExit(f"unknown command {command}")


def _timed_train(timings: Timings, argv: list[str]) -> int:
    import data_loader
    import train
    import vocabulary
    from captioning import features
    from captioning.training import loop

    def token_cache(arguments: dict, result: dict) -> dict:
        cache_dir, path = arguments.get("cache_dir"), Path(arguments["path"])
        cache = Path(cache_dir) / f"tokens_{path.stem}.json" if cache_dir else None
        # written during this call: built; older: loaded
        built = cache is not None and cache.is_file() and cache.stat().st_mtime >= timings.call_start
        return {"file": path.name, "captions": len(result), "built": built}

    stop_phase, _, stop_count = os.environ.get(STOP_VARIABLE, "").partition(":")
    steps_in_phase: dict[str, int] = {}

    def train_step(arguments: dict, result: float) -> dict:
        return {"phase": _phase(arguments["run"]), "captions": int(arguments["batch"].captions.shape[0])}

    def scst_step(arguments: dict, result: float) -> dict:
        run = arguments["run"]  # captions sampled: each image's, scst_samples times
        return {"phase": _phase(run), "captions": len(arguments["batch"].image_ids) * run.config.scst_samples,
                "reward": result}

    def stop(entry: dict) -> None:
        steps_in_phase[entry["phase"]] = steps_in_phase.get(entry["phase"], 0) + 1
        if entry["phase"] == stop_phase and steps_in_phase[stop_phase] == int(stop_count):
            # As a job scheduler would: train.py saves last.pt once the step in progress is counted, and exits.
            os.kill(os.getpid(), signal.SIGTERM)

    timings.wrap(vocabulary.Vocabulary, "from_annotations", "vocabulary", lambda a, r: {"words": len(r)})
    timings.wrap(data_loader, "tokenized_captions", "token_cache", token_cache)
    timings.wrap(features, "extract_features", "feature_cache",
                 lambda a, r: {"split": a["split"], "images": len(r["image_ids"]), "numbers_per_image": r[
                     "feature_size"], "bytes": Path(a["array_path"]).stat().st_size})
    timings.wrap(loop, "train_step", "train_step", train_step, after=stop)
    timings.wrap(loop, "scst_step", "train_step", scst_step, after=stop)
    timings.wrap(loop, "start_scst", "reward_setup",
                 lambda a, r: {"images": len(a["loader"].dataset.image_ids)})
    timings.wrap(loop, "validate", "validation",
                 lambda a, r: {"phase": _phase(a["run"]), "images": _validated_images(a["run"], a["loader"]),
                               "beam_size": a["run"].config.val_beam_size})
    timings.wrap(loop, "save_checkpoint", "checkpoint_save", lambda a, r: {"file": Path(a["path"]).name})
    return train.main(argv)


def _phase(run: Any) -> str:
    """The training phase a step or a validation belongs to: frozen, fine-tune or self-critical."""
    from captioning.training.run import in_scst
    return "self-critical" if in_scst(run) else "fine-tune" if run.fine_tuning else "frozen"


def _validated_images(run: Any, loader: Any) -> int:
    limit = run.config.val_max_images
    return min(limit, len(loader.dataset)) if limit else len(loader.dataset)


# --------------------------------------------------------------------------- running a stage


def tree_memory_mb(root: int) -> float | None:
    """PSS (RSS where PSS is unavailable) summed over root and its descendants, in MB; None without /proc."""
    proc = Path("/proc")
    if not (proc / str(root)).exists():
        return None
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        total += _process_memory_kb(pid)
    return total / 1024


def _process_memory_kb(pid: int) -> float:
    for name, field in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in (Path("/proc") / str(pid) / name).read_text().splitlines():
                if line.startswith(field):
                    return float(line.split()[1])
        except OSError:
            continue
    return 0.0


def run_stage(name: str, command: str, argv: list[str], work: Path, stop_after: str | None = None,
              threads: int | None = None, java: bool = True) -> dict[str, Any]:
    """Run one documented command in its own timed process (stop_after "<phase>:<n>": SIGTERM after that step;
    threads: PyTorch's CPU threads, OMP_NUM_THREADS; None = its default)."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    timings_path, log_path = logs / f"{name}.timings.jsonl", logs / f"{name}.log"
    timings_path.unlink(missing_ok=True)
    shown = " ".join(["python", command, *argv])
    print(f"[{name}] {shown}", flush=True)
    environment = {**os.environ, STOP_VARIABLE: stop_after or "", NO_JAVA_VARIABLE: "" if java else "1"}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", BOOTSTRAP, command, str(timings_path), *argv], cwd=ROOT,
                                   env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            status, usage, tree_peak = _watch(process)
        except BaseException:  # Ctrl-C or SIGTERM of the rehearsal: the stage must not run on without it
            process.terminate()
            process.wait()
            raise
    code = os.waitstatus_to_exitcode(status)
    expected = 130 if stop_after else 0  # train.py's exit status after saving on SIGTERM
    if code != expected:
        print("\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:]), file=sys.stderr)
        raise RehearsalError(f"stage {name} exited with {code} (expected {expected}); see {log_path}")
    return {"stage": name, "command": shown, "returncode": code, "stopped_after": stop_after,
            "seconds": round(time.time() - started, 2), "peak_rss_mb": round(_megabytes(usage.ru_maxrss), 1),
            "peak_tree_pss_mb": None if tree_peak is None else round(tree_peak, 1),
            "timings": read_timings(timings_path), "log": str(log_path)}


def _megabytes(max_rss: int) -> float:
    """ru_maxrss in MB: KiB on Linux, bytes on macOS."""
    return max_rss / (1 << 20) if sys.platform == "darwin" else max_rss / 1024


def _watch(process: subprocess.Popen) -> tuple[int, Any, float | None]:
    """Poll the memory of the process and its workers until it ends; returns its wait4 status, rusage, peak."""
    tree_peak = None
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return status, usage, tree_peak
        memory = tree_memory_mb(process.pid)
        if memory is not None:
            tree_peak = max(tree_peak or 0.0, memory)
        time.sleep(0.5)


def read_timings(path: Path) -> list[dict]:
    """The timed calls a stage recorded so far (a half-written last line is left for later)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    return entries


# --------------------------------------------------------------------------- the rehearsal


def prepare_work(work: Path, scale: float, seed: int) -> bool:
    """Claim the work folder; clear this tool's earlier outputs; returns whether source/ can be reused."""
    if work.exists() and not work.is_dir():
        raise RehearsalError(f"--work {work} is a file, not a folder: give an empty or new --work folder")
    if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
        raise RehearsalError(f"{work} holds files this tool did not make: give an empty or new --work folder")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RehearsalError(f"cannot create --work {work} ({error.strerror or error}): give a writable folder"
                             ) from None
    (work / MARKER).write_text("made by rehearse_coco.py; it clears this folder's outputs on each run\n")
    for name in ("coco", "run", "logs", "weights", "results_test.json", "rehearsal.json"):
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    stamp = work / "source" / "stand_in.json"
    wanted = {"scale": scale, "seed": seed, "version": GENERATOR_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()).get("parameters") == wanted:
        return True
    if (work / "source").exists():
        shutil.rmtree(work / "source")
    return False


def rehearse(args: argparse.Namespace, extra_train_flags: tuple[str, ...] = (), java: bool = True) -> dict[str, Any]:
    """Build (or reuse) the stand-in, serve it, run every stage; returns the report.

    extra_train_flags go after the others on the first train command, and java=False makes evaluate score as
    without Java (the test shrinks its work with them)."""
    work = args.work.resolve()
    reuse = prepare_work(work, args.scale, args.seed)
    source = work / "source"
    stages = []
    started = time.time()
    if reuse:
        stand_in = json.loads((source / "stand_in.json").read_text())
        print(f"[generate] reusing the stand-in in {source} (made in {stand_in['seconds']:.0f} s)")
    else:
        print(f"[generate] drawing the stand-in into {source}", flush=True)
        counts = generate(source, args.scale, args.seed, args.generate_workers)
        stand_in = {"parameters": {"scale": args.scale, "seed": args.seed, "version": GENERATOR_VERSION},
                    "counts": counts, "seconds": round(time.time() - started, 2),
                    "generate_workers": args.generate_workers}
        (source / "stand_in.json").write_text(json.dumps(stand_in))
    counts = stand_in["counts"]
    # a reused stand-in's row shows the time it took to make, not the time to find it
    stages.append({"stage": "generate", "command": "(this script)", "returncode": 0, "reused": reuse,
                   "seconds": stand_in["seconds"], "counts": counts})
    server, base_url = serve(source)
    try:
        stages += run_pipeline(args, work, source, base_url, counts, list(extra_train_flags), java)
    finally:
        server.shutdown()
        server.server_close()
    report = {"recipe": _shown(args.recipe), "scale": args.scale, "seed": args.seed, "steps_per_phase": args.steps,
              "num_workers": args.num_workers,
              "cpu": cpu_description(), "stages": stages, "units": unit_figures(stages, counts),
              "disk_mb": disk_use(work)}
    (work / "rehearsal.json").write_text(json.dumps(report, indent=1))
    return report


def run_pipeline(args: argparse.Namespace, work: Path, source: Path, base_url: str, counts: dict[str, int],
                 extra_train_flags: list[str], java: bool = True) -> list[dict]:
    """prepare -> train (stopped mid-epoch in each phase, resumed) -> evaluate."""
    coco, run = work / "coco", work / "run"
    stage = functools.partial(run_stage, work=work, threads=args.threads, java=java)
    workers = [] if args.num_workers is None else ["--num-workers", str(args.num_workers)]
    stages = [stage("prepare", "prepare_data.py", [
        "coco", "--out", str(coco), "--year", "2014", "--base-url", base_url,
        "--checksums", str(source / "checksums.json"), "--karpathy-split", str(source / "dataset_coco.json")])]
    train_images = counts["karpathy_train"] + counts["karpathy_restval"]
    steps = min(args.steps, math.ceil(train_images / load_recipe(args.recipe)["batch_size"]))
    stop_at = max(steps // 2, 1)
    first, second = phases(args.recipe)
    epochs = ["--epochs", "1", "--scst-epochs", "1"] if second == "self-critical" else \
        ["--epochs", "2", "--fine-tune-after", "1"]
    recipe = ["--config", _shown(args.recipe), "--out", str(run), "--no-progress", *workers]
    stages.append(stage("train", "train.py", recipe + [
        "--data-dir", str(coco), *shrink_flags(work), *epochs, "--max-steps-per-epoch", str(args.steps),
        *extra_train_flags], stop_after=f"{first}:{stop_at}"))
    stages.append(stage("train_resume_1", "train.py", recipe + ["--resume"], stop_after=f"{second}:{stop_at}"))
    stages.append(stage("train_resume_2", "train.py", recipe + ["--resume"]))
    stages.append(stage("evaluate", "evaluate.py", [
        "--checkpoint", str(run / "best.pt"), "--split", "karpathy_test", "--beam-size", "3",
        "--out", str(work / "results_test.json"), *workers]))
    for entry in stages:  # the report says under which thread setting it was measured
        entry["threads"] = args.threads
    check_outcome(work, stages, steps, (first, second))
    return stages


def phases(recipe: Path) -> tuple[str, str]:
    """The two phases the rehearsal trains of a recipe: frozen then fine-tune, or, for a recipe with self-critical
    epochs, frozen (cross-entropy from the cache) then self-critical."""
    return ("frozen", "self-critical") if load_recipe(recipe).get("scst_epochs") else ("frozen", "fine-tune")


def _shown(path: Path) -> str:
    """A recipe's path as the docs write it: relative to the repository when it lies there."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def shrink_flags(work: Path) -> list[str]:
    """Flags that shrink the CNN's work (ResNet-18 at 56 px): everything else stays configs/coco.json's.

    Where train.py takes a local weights file, a randomly initialised ResNet-18 saved as a torchvision state dict
    stands in for the ImageNet weights (speed does not depend on their values), so the recipe's own path runs:
    pretrained weights, frozen, cached features, then fine-tuned. Otherwise the backbone is random and frozen."""
    import torch
    import torchvision

    from captioning.config import Config
    flags = ["--backbone", "resnet18", "--image-size", "56"]
    if "weights" not in {field.name for field in dataclasses.fields(Config)}:
        return flags + ["--pretrained", "no", "--train-backbone", "no", "--resize-size", "64"]
    path = work / "weights" / "resnet18_stand_in.pth"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return flags + ["--pretrained", "yes", "--weights", str(path)]


def check_outcome(work: Path, stages: list[dict], steps: int, trained_phases: tuple[str, str]) -> None:
    """The run must have trained both phases for their full step budget across the stops, and evaluated."""
    log = [json.loads(line) for line in (work / "run" / "train_log.jsonl").read_text().splitlines() if line.strip()]
    epochs = [entry for entry in log if entry.get("kind") == "epoch"]
    if [entry["epoch"] for entry in epochs] != [1, 2]:
        raise RehearsalError(f"the training log shows epochs {[e['epoch'] for e in epochs]}, not [1, 2]")
    trained = {}
    for stage in stages:
        for entry in stage.get("timings", []):
            if entry.get("event") == "train_step":
                trained[entry["phase"]] = trained.get(entry["phase"], 0) + 1
    if trained != {phase: steps for phase in trained_phases}:
        raise RehearsalError(f"steps trained per phase {trained}, expected {steps} in each (a resume repeated or "
                             "skipped batches)")
    results = json.loads((work / "results_test.json").read_text())
    if not results:
        raise RehearsalError("evaluate wrote an empty results file")


# --------------------------------------------------------------------------- figures


def unit_figures(stages: list[dict], counts: dict[str, int]) -> dict[str, Any]:
    """Per-unit figures from the stages' timed calls."""
    events: dict[str, list[dict]] = {}
    for stage in stages:
        for entry in stage.get("timings", []):
            events.setdefault(entry["event"], []).append({**entry, "stage": stage["stage"]})
    units: dict[str, Any] = {}
    if events.get("vocabulary"):
        entry = events["vocabulary"][0]
        units["vocabulary"] = {"seconds": round(entry["seconds"], 2), "words": entry["words"],
                               "captions": counts["karpathy_train_captions"] + counts["karpathy_restval_captions"],
                               "peak_rss_mb": entry["peak_rss_mb"]}
    built = [entry for entry in events.get("token_cache", []) if entry.get("built")]
    if built:
        captions = sum(entry["captions"] for entry in built)
        seconds = sum(entry["seconds"] for entry in built)
        units["token_cache"] = {"seconds": round(seconds, 2), "captions": captions,
                                "seconds_per_100k_captions": round(seconds / captions * 1e5, 2)}
    for entry in events.get("feature_cache", []):
        # its loader tokenizes the split's captions the first time (the token cache): that is counted apart
        seconds = entry["seconds"] - _nested_seconds(entry, events.get("token_cache", []))
        units[f"feature_cache_{entry['split']}"] = {
            "seconds": round(seconds, 2), "images": entry["images"],
            "seconds_per_1000_images": round(seconds / max(entry["images"], 1) * 1000, 2),
            "peak_rss_mb": entry["peak_rss_mb"], **({"numbers_per_image": entry["numbers_per_image"],
                                                     "kb_per_image": round(entry["bytes"] / entry["images"] / 1e3, 1)}
                                                    if "bytes" in entry else {})}
    for entry in events.get("reward_setup", [])[:1]:
        units["reward_setup"] = {"seconds": round(entry["seconds"], 2), "images": entry["images"],
                                 "peak_rss_mb": entry["peak_rss_mb"]}
    for phase in ("frozen", "fine-tune", "self-critical"):
        steps = [entry for entry in events.get("train_step", []) if entry["phase"] == phase]
        if steps:
            units[f"train_step_{phase}"] = {"steps": len(steps), "median_seconds": round(statistics.median(
                entry["seconds"] for entry in steps), 4), "wall_seconds_per_step": _wall_per_step(steps),
                "captions_per_step": round(statistics.fmean(entry["captions"] for entry in steps), 1),
                **({"mean_reward": round(statistics.fmean(entry["reward"] for entry in steps), 4)}
                   if "reward" in steps[0] else {})}
        validations = [entry for entry in events.get("validation", []) if entry["phase"] == phase]
        for entry in validations[:1]:
            per_5000 = round(entry["seconds"] / entry["images"] * 5000, 2)
            units[f"validation_{phase}"] = {"seconds": round(entry["seconds"], 2), "images": entry["images"],
                                            "seconds_per_5000_images": per_5000,
                                            "beam_size": entry.get("beam_size", 1)}
    for event in ("captioning", "scoring", "baseline_caption"):
        for entry in events.get(event, [])[:1]:
            units[f"evaluate_{event}"] = {key: round(value, 2) if isinstance(value, float) else value
                                          for key, value in entry.items() if key not in ("event", "start", "stage")}
    saves = events.get("checkpoint_save", [])
    if saves:
        units["checkpoint_save"] = {"saves": len(saves), "median_seconds": round(statistics.median(
            entry["seconds"] for entry in saves), 3)}
    return units


def _nested_seconds(outer: dict, inner: list[dict]) -> float:
    """Seconds of the inner calls made during the outer one (same process)."""
    end = outer["start"] + outer["seconds"]
    return sum(entry["seconds"] for entry in inner
               if entry["stage"] == outer["stage"] and outer["start"] <= entry["start"] <= end)


def _wall_per_step(steps: list[dict]) -> float | None:
    """Median time from one step's start to the next one's in the same process (data loading included)."""
    gaps = [later["start"] - earlier["start"] for earlier, later in zip(steps, steps[1:])
            if later["stage"] == earlier["stage"]]
    return round(statistics.median(gaps), 4) if gaps else None


def disk_use(work: Path) -> dict[str, float]:
    """MB on disk (allocated blocks) of the work folder's parts."""
    parts = {"source": work / "source", "downloads": work / "coco" / "downloads", "images": work / "coco" / "images",
             "annotations": work / "coco" / "annotations", "cache": work / "coco" / "cache", "run": work / "run",
             "weights": work / "weights"}
    return {name: round(_allocated(path) / 1e6, 1) for name, path in parts.items()}


def _allocated(path: Path) -> int:
    if not path.exists():
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    return total


def cpu_description() -> str:
    """The CPU by the flags that matter for speed, and its core count."""
    from captioning.runtime import proc_cpuinfo_flags
    flags = proc_cpuinfo_flags()
    kind = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else \
        "plain AVX-512" if "avx512f" in flags else "no AVX-512" if flags else "unknown flags"
    return f"{os.cpu_count()} cores, {kind}"


def format_table(report: dict[str, Any]) -> str:
    """The stages and the per-unit figures as text."""
    lines = [f"COCO-scale rehearsal of {report['recipe']}, scale {report['scale']}, {report['cpu']}",
             f"{'stage':<16}{'seconds':>10}{'peak RSS MB':>13}{'tree PSS MB':>13}"]
    for stage in report["stages"]:
        lines.append(f"{stage['stage']:<16}{stage['seconds']:>10.1f}{_cell(stage.get('peak_rss_mb')):>13}"
                     f"{_cell(stage.get('peak_tree_pss_mb')):>13}")
    lines.append("per unit:")
    for name, figures in report["units"].items():
        lines.append(f"  {name:<30}" + ", ".join(f"{key} {value}" for key, value in figures.items()))
    lines.append("disk MB: " + ", ".join(f"{name} {value}" for name, value in report["disk_mb"].items()))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options, checked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True,
                        help="folder for the stand-in, the prepared data, the run and the report (about 1.5 GB at "
                             "scale 1); made by this tool, and cleared of its earlier outputs on each run")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's counts (default 1.0)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per phase (default 200)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers for training and evaluation (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch CPU threads of each stage (OMP_NUM_THREADS; default: PyTorch's choice). On a "
                             "CPU shared with other jobs, 1 avoids threads spinning while waiting for each other")
    parser.add_argument("--generate-workers", type=int, default=2, help="processes drawing the stand-in (default 2)")
    parser.add_argument("--recipe", type=Path, default=RECIPE,
                        help="the recipe to rehearse (default configs/coco.json; configs/coco_attention.json "
                             "rehearses its cross-entropy and self-critical stages)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.recipe.is_file():
        parser.error(f"--recipe {args.recipe}: no such file")
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.steps < 2 or args.generate_workers < 1 or (args.num_workers is not None and args.num_workers < 0) \
            or (args.threads is not None and args.threads < 1):
        parser.error("--steps must be at least 2, --generate-workers and --threads at least 1, --num-workers at "
                     "least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_arguments(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops the stage in progress too, see run_stage
    try:
        report = rehearse(args)
    except RehearsalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(format_table(report))
    print(f"wrote {args.work / 'rehearsal.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
