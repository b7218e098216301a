"""Command lines: user errors get one clear message and a non-zero exit, never a traceback; the happy paths print
what they promise (caption.py: `path<TAB>caption`; evaluate.py: one JSON line and a COCO results file)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

import caption
import evaluate
from captioning import metrics
import prepare_data
import train
from captioning import training
from captioning.checkpoint import load_checkpoint, save_checkpoint
from conftest import ROOT
from vocabulary import Vocabulary

TINY_FLAGS = ["--config", "configs/synthetic.json", "--backbone", "resnet18", "--image-size", "32",
              "--resize-size", "32", "--embed-size", "16", "--hidden-size", "32", "--vocab-threshold", "1",
              "--precision", "fp32", "--scst-epochs", "0", "--pretrain-epochs", "0", "--object-features", "false",
              "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """A script run as a user runs it: its own process, from the repository root."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def error_lines(err: str) -> list[str]:
    """The error messages among a CLI's stderr lines (progress bars and warnings may surround them)."""
    return [line for line in err.splitlines() if line.startswith("error:")]


def one_line_error(err: str) -> str:
    """The single line a CLI printed on stderr, which must be an error message."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit black PNG written by hand: 10,000 x 10,000 pixels take a few kilobytes and no memory to make."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# Each kind of unusable checkpoint and what its error message must say.
EXPECTED = {"vocabulary": "do not fit", "sizes": "do not fit", "settings": "backbone must be one of",
            "garbage": "not a checkpoint", "missing": "not found"}


@pytest.fixture(scope="module")
def mismatched(trained_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints that do not fit together: a vocabulary with a word more than the decoder has, sizes that differ
    from the weights, settings no model can be built from, and a file that is no checkpoint at all."""
    folder = tmp_path_factory.mktemp("mismatched")
    state = load_checkpoint(trained_checkpoint)
    vocab = Vocabulary.from_dict(state["vocab"])
    vocab.add_word("zebra")
    save_checkpoint(folder / "vocabulary.pt", {**state, "vocab": vocab.to_dict()})
    light = {key: value for key, value in state.items() if key not in ("optimizer", "scheduler")}
    save_checkpoint(folder / "sizes.pt", {**light, "config": {**state["config"], "hidden_size": 48}})
    save_checkpoint(folder / "settings.pt", {**light, "config": {**state["config"], "backbone": "resnet9"}})
    (folder / "garbage.pt").write_text("this is not a checkpoint\n")
    return {kind: folder / f"{kind}.pt" for kind in EXPECTED}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("cli", [caption, evaluate], ids=["caption", "evaluate"])
def test_a_checkpoint_that_does_not_fit_is_one_clear_error(cli, kind, mismatched, synthetic_dir, capsys):
    image = next((synthetic_dir / "images" / "test").iterdir())
    args = [str(image)] if cli is caption else ["--data-dir", str(synthetic_dir), "--split", "test"]
    assert cli.main(["--checkpoint", str(mismatched[kind]), "--device", "cpu", *args]) == 2
    captured = capsys.readouterr()
    message = one_line_error(captured.err)
    assert EXPECTED[kind] in message
    if kind in ("garbage", "missing"):
        assert str(mismatched[kind]) in message
    assert captured.out == ""


def test_resuming_a_checkpoint_that_does_not_fit_is_refused(mismatched, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    os.link(mismatched["vocabulary"], out / "last.pt")
    assert train.main(["--out", str(out), "--resume"]) == 2
    assert "do not fit" in one_line_error(capsys.readouterr().err)


def test_resuming_with_other_model_sizes_is_refused(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    os.link(trained_checkpoint.parent / "last.pt", out / "last.pt")
    assert train.main(["--out", str(out), "--resume", "--hidden-size", "99"]) == 2
    message = one_line_error(capsys.readouterr().err)
    assert "hidden_size 99" in message and "64" in message


def test_a_resumed_run_is_checked_with_its_own_settings_not_the_recipes(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, out)
    # The recipe plans self-critical epochs and no early stopping; this run was trained without them, so it goes
    # on with its own settings (3 epochs, none self-critical)...
    assert train.main(["--config", "configs/synthetic.json", "--out", str(out), "--resume", "--epochs", "3",
                       "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 3
    # ... and settings given on resume are checked once merged with the checkpoint's.
    assert train.main(["--out", str(out), "--resume", "--epochs", "4", "--scst-epochs", "0", "--scst-samples",
                       "1"]) == 2
    assert "scst_samples must be at least 2" in one_line_error(capsys.readouterr().err)


@pytest.fixture
def damaged_data(synthetic_dir, tmp_path) -> Path:
    """A copy of the synthetic set whose train split has an empty annotation file."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir / "annotations", data / "annotations")
    shutil.copytree(synthetic_dir / "images" / "val", data / "images" / "val")  # only the train split is damaged
    (data / "annotations" / "captions_train.json").write_text("")
    return data


@pytest.mark.parametrize("case, expected", [
    ("missing data", "nowhere"),
    ("missing val split", "captions_nope.json"),
    ("empty annotation file", "captions_train.json"),
    ("only caption-less images", "no captioned images"),
    ("missing recipe", "recipe file not found"),
    ("out is a file", "File exists"),
    ("resume without a checkpoint", "no checkpoint to resume from"),
    ("resume from a non-checkpoint", "not a checkpoint"),
])
def test_train_cli_user_errors(case, expected, synthetic_dir, damaged_data, tmp_path, capsys):
    out, data = tmp_path / "run", synthetic_dir
    flags = [*TINY_FLAGS, "--epochs", "1"]
    if case == "missing data":
        data = tmp_path / "nowhere"
    elif case == "missing val split":
        flags += ["--val-split", "nope"]
    elif case == "empty annotation file":
        data = damaged_data
    elif case == "only caption-less images":
        data = damaged_data
        coco = json.loads((synthetic_dir / "annotations" / "captions_train.json").read_text())
        (data / "annotations" / "captions_train.json").write_text(json.dumps({**coco, "annotations": []}))
    elif case == "missing recipe":
        flags[1] = str(tmp_path / "recipe.json")
    elif case == "out is a file":
        out.write_text("")
    elif case == "resume without a checkpoint":
        flags.append("--resume")
    elif case == "resume from a non-checkpoint":
        out.mkdir()
        (out / "last.pt").write_bytes(b"\x89PNG not really")
        flags.append("--resume")
    assert train.main([*flags, "--data-dir", str(data), "--out", str(out)]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and expected in errors[0], errors
    assert not [entry for entry in training.read_log(out) if entry["kind"] == "step"]  # refused before training


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    """A 1x1 image, a 10,000 x 10,000 one, a text file named .jpg, and a path with nothing behind it."""
    folder = tmp_path_factory.mktemp("odd_images")
    Image.new("RGB", (1, 1), (30, 120, 200)).save(folder / "one_pixel.png")
    (folder / "not_an_image.jpg").write_text("GIF? JPEG? no, just text")
    return {"one_pixel": folder / "one_pixel.png", "huge": write_blank_png(folder / "huge.png", 10_000, 10_000),
            "not_an_image": folder / "not_an_image.jpg", "missing": folder / "missing.jpg"}


def test_caption_prints_path_tab_caption(trained_checkpoint, synthetic_dir, capsys):
    images = sorted((synthetic_dir / "images" / "test").iterdir())[:3]
    assert caption.main(["--checkpoint", str(trained_checkpoint), "--device", "cpu", *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(image) for image in images]
    vocab = Vocabulary.from_dict(load_checkpoint(trained_checkpoint)["vocab"])
    for line in lines:
        words = line.split("\t")[1].split()
        assert words and all(word in vocab for word in words)


def test_caption_skips_bad_images_and_prints_the_good_ones(trained_checkpoint, synthetic_dir, odd_images):
    good = sorted((synthetic_dir / "images" / "test").iterdir())[:2]
    images = [good[0], odd_images["missing"], odd_images["one_pixel"], odd_images["not_an_image"],
              odd_images["huge"], good[1]]
    result = run_cli(["caption.py", "--checkpoint", str(trained_checkpoint), "--device", "cpu",
                      *map(str, images)])
    assert result.returncode == 1
    printed = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert printed == [str(good[0]), str(odd_images["one_pixel"]), str(odd_images["huge"]), str(good[1])]
    errors = error_lines(result.stderr)
    assert len(errors) == 2
    assert str(odd_images["missing"]) in errors[0] and "not found" in errors[0]
    assert str(odd_images["not_an_image"]) in errors[1] and "cannot read image" in errors[1]
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr


@pytest.fixture
def damaged_split(synthetic_dir, tmp_path, odd_images) -> tuple[Path, set[str]]:
    """The synthetic set with a test split holding a non-image, a missing file, a 1x1 image and an uncaptioned
    image; returns the folder and the names of the two unreadable files."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir / "annotations", data / "annotations")
    shutil.copytree(synthetic_dir / "images" / "test", data / "images" / "test")
    folder = data / "images" / "test"
    names = sorted(path.name for path in folder.iterdir())
    shutil.copy(odd_images["not_an_image"], folder / names[0])
    (folder / names[1]).unlink()
    shutil.copy(odd_images["one_pixel"], folder / names[2])  # a PNG under a .jpg name: read by its content
    annotations = data / "annotations" / "captions_test.json"
    coco = json.loads(annotations.read_text())
    shutil.copy(folder / names[3], folder / "uncaptioned.jpg")
    coco["images"].append({"id": 77, "file_name": "uncaptioned.jpg", "width": 64, "height": 64})
    annotations.write_text(json.dumps(coco))
    return data, {names[0], names[1]}


def test_evaluate_end_to_end_with_unreadable_images_skipped_and_counted(trained_checkpoint, damaged_split,
                                                                        tmp_path, capsys):
    data, unreadable = damaged_split
    results = tmp_path / "results.json"
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(data), "--split",
                          "test", "--out", str(results), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    keys = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"} | ({"METEOR"} if metrics.java_available()
                                                                          else set())
    assert set(report["model"]) == keys and keys < set(report["baseline"])
    assert report["skipped_images"] == 2
    assert report["images"] == 4  # readable and captioned: the uncaptioned image has nothing to be scored against
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped unreadable image")]
    assert len(skipped) == 2 and all(any(name in line for line in skipped) for name in unreadable)

    coco = json.loads((data / "annotations" / "captions_test.json").read_text())
    readable = {image["id"] for image in coco["images"] if image["file_name"] not in unreadable}
    written = json.loads(results.read_text())
    assert isinstance(written, list) and all(set(entry) == {"image_id", "caption"} for entry in written)
    assert {entry["image_id"] for entry in written} == readable and len(readable) == 5
    assert all(isinstance(entry["caption"], str) for entry in written)


@pytest.mark.parametrize("case, expected", [
    ("missing data", "annotation file not found"),
    ("missing split", "captions_nope.json"),
    ("empty annotation file", "not valid JSON"),
    ("out is a folder", "is a folder"),
])
def test_evaluate_cli_user_errors(case, expected, trained_checkpoint, synthetic_dir, tmp_path, capsys):
    data, split, out = synthetic_dir, "test", tmp_path / "results.json"
    if case == "missing data":
        data = tmp_path / "nowhere"
    elif case == "missing split":
        split = "nope"
    elif case == "empty annotation file":
        data = tmp_path / "data"
        (data / "annotations").mkdir(parents=True)
        (data / "annotations" / "captions_test.json").write_text("")
    elif case == "out is a folder":
        out = tmp_path
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(data), "--split", split,
                          "--out", str(out), "--device", "cpu"]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


def test_prepare_data_cli_user_errors(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = run_cli(["prepare_data.py", "synthetic", "--out", str(a_file), "--train", "2"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(a_file) in one_line_error(result.stderr)
    with pytest.raises(SystemExit) as stopped:
        prepare_data.main(["synthetic", "--out", str(tmp_path / "x"), "--train", "-1"])
    assert stopped.value.code == 2 and "--train" in capsys.readouterr().err
    assert prepare_data.main(["coco", "--out", str(tmp_path / "coco"), "--karpathy-split",
                              str(tmp_path / "dataset_coco.json")]) == 1
    assert "dataset_coco.json does not exist" in one_line_error(capsys.readouterr().err)
    assert prepare_data.main(["coco", "--out", str(tmp_path / "coco"), "--year", "1999"]) == 1
    assert "--year" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "coco").exists()  # nothing downloaded or created


@pytest.mark.parametrize("target", ["the checkpoint", "an annotation file", "a notes file"])
def test_evaluate_never_replaces_a_file_that_is_not_a_results_file(target, trained_checkpoint, synthetic_dir,
                                                                   tmp_path, capsys):
    sources = {"the checkpoint": trained_checkpoint,
               "an annotation file": synthetic_dir / "annotations" / "captions_test.json"}
    out = tmp_path / "target"
    if target in sources:
        shutil.copyfile(sources[target], out)
    else:
        out.write_text("my notes\n")
    before = out.read_bytes()
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "test", "--out", str(out), "--device", "cpu"]) == 2
    assert "is not a results file" in one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == before


def test_evaluate_replaces_its_own_results_file(trained_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps([{"image_id": 1, "caption": "an older result"}]))
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "test", "--out", str(out), "--device", "cpu"]) == 0
    assert "an older result" not in out.read_text() and len(json.loads(out.read_text())) == 6


def test_prepare_data_never_replaces_annotations_it_did_not_write(tmp_path, capsys):
    theirs = tmp_path / "annotations" / "captions_train.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text(json.dumps({"images": [], "annotations": [], "info": {"contributor": "a user"}}))
    before = theirs.read_bytes()
    assert prepare_data.main(["synthetic", "--out", str(tmp_path), "--train", "2", "--val", "1", "--test", "1"]) == 2
    assert "was not written by the synthetic generator" in one_line_error(capsys.readouterr().err)
    assert theirs.read_bytes() == before and not (tmp_path / "images").exists()  # nothing written at all
    ours = tmp_path / "ours"
    assert prepare_data.main(["synthetic", "--out", str(ours), "--train", "2", "--val", "1", "--test", "1"]) == 0
    assert prepare_data.main(["synthetic", "--out", str(ours), "--train", "3", "--val", "1", "--test", "1"]) == 0
    assert len(json.loads((ours / "annotations" / "captions_train.json").read_text())["images"]) == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_caption_refuses_a_pipe_named_like_an_image_instead_of_waiting_on_it(trained_checkpoint, tmp_path):
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)
    result = subprocess.run([sys.executable, "caption.py", "--checkpoint", str(trained_checkpoint), str(pipe)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not a regular file" in result.stderr


def test_train_reports_a_malicious_vocabulary_file_in_one_line(synthetic_dir, tmp_path, capsys):
    vocab = tmp_path / "vocab.pkl"
    vocab.write_bytes(pickle.dumps(os.getcwd))  # a global: loading it could run code
    assert train.main(TINY_FLAGS + ["--data-dir", str(synthetic_dir), "--out", str(tmp_path / "run"),
                                    "--vocab-file", str(vocab)]) == 2
    assert "refusing to load" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("cli", [caption, evaluate], ids=["caption", "evaluate"])
def test_ctrl_c_ends_caption_and_evaluate_with_one_line(cli, trained_checkpoint, synthetic_dir, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("captioning.inference.Captioner.caption_tensors", interrupted)
    image = next((synthetic_dir / "images" / "test").iterdir())
    argv = ["--checkpoint", str(trained_checkpoint), str(image)] if cli is caption else \
        ["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split", "test"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")


def test_evaluate_says_why_nothing_could_be_scored(trained_checkpoint, synthetic_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    for image in (data / "images" / "test").iterdir():
        image.unlink()
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(data), "--split", "test",
                          "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nothing to score" in error and "unreadable" in error and "file not found" in error


@pytest.mark.parametrize("field, value, expected", [("caption", 42, "annotations[3] (image"),
                                                    ("caption", None, "annotations[3] (image"),
                                                    ("file_name", None, "images[3] (id")])
def test_a_malformed_annotation_entry_is_named(field, value, expected, synthetic_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    annotations = data / "annotations" / "captions_train.json"
    coco = json.loads(annotations.read_text())
    coco["annotations" if field == "caption" else "images"][3][field] = value
    annotations.write_text(json.dumps(coco))
    assert train.main([*TINY_FLAGS, "--data-dir", str(data), "--out", str(tmp_path / "run")]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(annotations) in errors[0] and expected in errors[0] and field in errors[0]


def test_evaluate_checks_that_it_can_write_out_before_captioning(trained_checkpoint, synthetic_dir, tmp_path,
                                                                 monkeypatch, capsys):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == read_only else real_access(path, mode))
    monkeypatch.setattr("captioning.inference.Captioner.caption_split", lambda *args, **kwargs: pytest.fail("captioned first"))
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                          "test", "--out", str(read_only / "results.json"), "--device", "cpu"]) == 2
    assert "cannot be written" in one_line_error(capsys.readouterr().err)


@pytest.fixture
def pipe(tmp_path):
    """A named pipe, and an alarm that ends a test that opens it (nothing ever writes to it) instead of hanging."""
    import signal

    def waited(signum, frame):
        raise TimeoutError("opened the pipe and waited on it")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    previous = signal.signal(signal.SIGALRM, waited)
    signal.alarm(60)
    yield path
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("command, flag", [
    ("train", "--config"), ("train", "--vocab-file"), ("train", "--weights"), ("evaluate", "--out"),
    ("evaluate", "--checkpoint"), ("caption", "--checkpoint"), ("coco", "--checksums"),
    ("coco", "--karpathy-split"),
])
def test_a_pipe_given_as_any_file_a_command_reads_or_writes_is_refused_in_one_line(
        command, flag, pipe, trained_checkpoint, synthetic_dir, tmp_path, capsys):
    if command == "train":
        extra = ["--pretrained", "no"] if flag != "--weights" else ["--pretrained", "yes"]
        code = train.main(TINY_FLAGS + extra + ["--data-dir", str(synthetic_dir), "--out", str(tmp_path / "run"),
                                                "--epochs", "1", "--max-steps-per-epoch", "1", flag, str(pipe)])
    elif command == "evaluate":
        code = evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(synthetic_dir), "--split",
                              "test", "--max-images", "2", flag, str(pipe)])  # the last --checkpoint counts
    elif command == "caption":
        image = next((synthetic_dir / "images" / "test").iterdir())
        code = caption.main([flag, str(pipe), str(image)])
    else:
        code = prepare_data.main(["coco", "--out", str(tmp_path / "coco"), flag, str(pipe)])
    assert code != 0
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "not a regular file" in errors[0] and str(pipe) in errors[0], errors


@pytest.mark.parametrize("flags", [["--pretrained", "no"], ["--pretrained", "no", "--pretrain-epochs", "1"]],
                         ids=["pretrained-no", "pretraining"])
def test_a_weights_file_that_would_never_be_read_is_refused_in_one_line(flags, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(TINY_FLAGS + ["--data-dir", str(synthetic_dir), "--out", str(out), "--weights",
                                    str(tmp_path / "missing.pth"), *flags]) == 2
    assert "would never be read" in one_line_error(capsys.readouterr().err) and not out.exists()


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--epochs", "-2"), ("--batch-size", "0"),
                                         ("--batch-size", "-1"), ("--max-images", "-1")])
def test_pretrain_encoder_refuses_numbers_that_train_nothing_before_starting(flag, value, synthetic_dir, tmp_path,
                                                                            capsys):
    import pretrain_encoder
    save = tmp_path / "a.pth"
    with pytest.raises(SystemExit) as exit_:
        pretrain_encoder.main(["--data-dir", str(synthetic_dir), flag, value, "--save", str(save)])
    assert exit_.value.code == 2 and not save.exists()
    assert f"argument {flag}: must be at least" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [("--lr", "1e300", "must be above 0 and at most 1"),
                                                  ("--lr", "nan", "must be above 0 and at most 1"),
                                                  ("--backbone", "vgg16", "invalid choice"),
                                                  ("--image-size", "0", "image_size must be between 1 and 1024"),
                                                  ("--image-size", "100000", "image_size must be between 1 and 1024")])
def test_pretrain_encoder_refuses_a_rate_or_cnn_it_cannot_train(flag, value, message, synthetic_dir, tmp_path,
                                                               capsys):
    import pretrain_encoder
    with pytest.raises(SystemExit) as exit_:
        pretrain_encoder.main(["--data-dir", str(synthetic_dir), flag, value, "--save", str(tmp_path / "a.pth")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_pretrain_encoder_refuses_a_save_path_it_cannot_write_before_training(synthetic_dir, tmp_path, capsys):
    import pretrain_encoder
    save = tmp_path / "no such folder" / "a.pth"
    assert pretrain_encoder.main(["--data-dir", str(synthetic_dir), "--save", str(save)]) == 2
    assert "not writable" in one_line_error(capsys.readouterr().err)


def test_pretrain_encoder_takes_its_defaults_from_the_recipe(synthetic_dir, tmp_path, capsys):
    """One source for the pretraining's settings: a recipe that does not pretrain gives no epochs to default to."""
    import pretrain_encoder
    with pytest.raises(SystemExit) as exit_:
        pretrain_encoder.main(["--config", "configs/coco.json", "--data-dir", str(synthetic_dir)])
    assert exit_.value.code == 2 and "pretrain_epochs 0" in capsys.readouterr().err


def test_a_diverging_pretraining_names_the_pretraining_rate(synthetic_dir, tmp_path, capsys):
    flags = list(TINY_FLAGS)
    flags[flags.index("--pretrain-epochs") + 1] = "1"
    assert train.main([*flags, "--data-dir", str(synthetic_dir), "--out", str(tmp_path / "run"),
                       "--pretrained", "no", "--pretrain-lr", "1e300", "--pretrain-batch-size", "8"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "diverged" in error and "--pretrain-lr" in error
    assert "--lr " not in error and "--lr;" not in error


def test_evaluate_without_the_training_captions_stops_before_captioning(trained_checkpoint, synthetic_dir, tmp_path,
                                                                         monkeypatch, capsys):
    """U5: the baseline needs the training split's captions; a data folder without them is refused first, not after
    the whole split was captioned."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    (data / "annotations" / "captions_train.json").unlink()
    monkeypatch.setattr("captioning.inference.Captioner.caption_split",
                        lambda *args, **kwargs: pytest.fail("captioned first"))
    assert evaluate.main(["--checkpoint", str(trained_checkpoint), "--data-dir", str(data), "--split", "test"]) == 2
    assert "captions_train.json" in one_line_error(capsys.readouterr().err)
