"""Tests for rehearse_coco: the stand-in has COCO's layout, and the whole rehearsal runs offline at a tiny scale."""
from __future__ import annotations

import json
import os
import zipfile

import pytest

from tools import rehearse_coco

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the rehearsal stops training with SIGTERM")

STAGES = ["generate", "prepare", "train", "train_resume_1", "train_resume_2", "evaluate"]
UNITS = ["vocabulary", "token_cache", "feature_cache_karpathy_train", "feature_cache_karpathy_val",
         "train_step_frozen", "train_step_fine-tune", "validation_frozen", "validation_fine-tune",
         "evaluate_captioning", "evaluate_scoring", "evaluate_baseline_caption", "checkpoint_save"]


def test_zipf_law_is_calibrated_to_cocos_vocabulary():
    exponent = rehearse_coco.zipf_exponent()
    karpathy_train_tail_tokens = (82_783 + 40_504 - 10_000) * 5 * 2.5
    words = rehearse_coco.expected_vocabulary(exponent, karpathy_train_tail_tokens)
    assert 9_700 <= words + 100 <= 10_300  # the true captions' ~100 words make up the rest


def test_stand_in_has_the_real_archive_layout(tmp_path):
    counts = rehearse_coco.generate(tmp_path, scale=0.0005, seed=0, workers=1)
    assert (counts["train_images"], counts["val_images"]) == (41, 20)
    with zipfile.ZipFile(tmp_path / "zips" / "val2014.zip") as archive:
        names = archive.namelist()
    assert names[0] == "val2014/" and len(names) == 21
    assert all(name.startswith("val2014/COCO_val2014_") and len(name) == len("val2014/COCO_val2014_") + 16
               for name in names[1:])
    with zipfile.ZipFile(tmp_path / "annotations" / "annotations_trainval2014.zip") as archive:
        train = json.loads(archive.read("annotations/captions_train2014.json"))
    assert len(train["images"]) == 41 and len(train["annotations"]) == counts["train_captions"] >= 5 * 41
    karpathy = json.loads((tmp_path / "dataset_coco.json").read_text())["images"]
    assert {entry["split"] for entry in karpathy} == {"train", "restval", "val", "test"}
    entry = karpathy[0]
    assert entry["filename"] == f"COCO_{entry['filepath']}_{entry['cocoid']:012d}.jpg"
    assert entry["sentences"][0]["tokens"] == rehearse_coco.karpathy_tokens(entry["sentences"][0]["raw"])
    checksums = json.loads((tmp_path / "checksums.json").read_text())
    assert set(checksums) == {"train2014.zip", "val2014.zip", "annotations_trainval2014.zip"}


def test_rehearsal_runs_end_to_end_at_a_tiny_scale(tmp_path):
    work = tmp_path / "work"
    args = rehearse_coco.parse_arguments(["--work", str(work), "--scale", "0.001", "--steps", "2",
                                          "--num-workers", "0", "--generate-workers", "1", "--threads", "1"])
    # A small decoder, 32-pixel images and scoring without a JVM keep the test short; the pipeline is the same.
    report = rehearse_coco.rehearse(args, extra_train_flags=("--embed-size", "32", "--hidden-size", "32",
                                                             "--image-size", "32", "--resize-size", "32"), java=False)
    assert [stage["stage"] for stage in report["stages"]] == STAGES
    stopped = {stage["stage"]: stage["stopped_after"] for stage in report["stages"][1:]}
    assert stopped == {"prepare": None, "train": "frozen:1", "train_resume_1": "fine-tune:1",
                       "train_resume_2": None, "evaluate": None}
    assert all(stage["seconds"] > 0 for stage in report["stages"])
    assert all(stage["peak_rss_mb"] > 0 for stage in report["stages"][1:])
    assert set(UNITS) <= set(report["units"])
    assert report["units"]["train_step_frozen"]["steps"] == report["units"]["train_step_fine-tune"]["steps"] == 2
    assert report["units"]["vocabulary"]["captions"] > 0
    assert json.loads((work / "rehearsal.json").read_text())["units"] == report["units"]
    log = [json.loads(line) for line in (work / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum(entry["kind"] == "resume" for entry in log) == 2
    assert any(entry["kind"] == "fine_tune" for entry in log)
    # a second run reuses the stand-in and clears only its own earlier outputs
    assert rehearse_coco.prepare_work(work, 0.001, 0) is True
    assert not (work / "run").exists() and not (work / "coco").exists()
    assert rehearse_coco.prepare_work(work, 0.002, 0) is False and not (work / "source").exists()


def test_the_attention_recipe_is_rehearsed_through_its_self_critical_stage_at_a_tiny_scale(tmp_path):
    work = tmp_path / "work"
    args = rehearse_coco.parse_arguments(["--work", str(work), "--scale", "0.001", "--steps", "2",
                                          "--num-workers", "0", "--generate-workers", "1", "--threads", "1",
                                          "--recipe", str(rehearse_coco.ROOT / "configs" / "coco_attention.json")])
    report = rehearse_coco.rehearse(args, extra_train_flags=("--embed-size", "32", "--hidden-size", "32",
                                                             "--image-size", "64", "--resize-size", "64"), java=False)
    assert report["recipe"] == "configs/coco_attention.json"
    assert [stage["stage"] for stage in report["stages"]] == STAGES
    stopped = {stage["stage"]: stage["stopped_after"] for stage in report["stages"][1:]}
    assert stopped == {"prepare": None, "train": "frozen:1", "train_resume_1": "self-critical:1",
                       "train_resume_2": None, "evaluate": None}
    units = report["units"]
    assert {"train_step_frozen", "train_step_self-critical", "validation_frozen", "validation_self-critical",
            "reward_setup", "evaluate_captioning"} <= set(units) and "train_step_fine-tune" not in units
    assert units["train_step_self-critical"]["steps"] == 2 and "mean_reward" in units["train_step_self-critical"]
    scst_steps = [entry for stage in report["stages"] for entry in stage.get("timings", [])
                  if entry["event"] == "train_step" and entry["phase"] == "self-critical"]
    assert all(entry["captions"] % 5 == 0 and entry["captions"] <= 10 * 5 for entry in scst_steps)  # 5 samples
    assert units["validation_self-critical"]["beam_size"] == 3
    # ResNet-18's layer4 at 64 px: 2 x 2 cells of 512 after the pooled 512, in float16
    assert units["feature_cache_karpathy_train"]["numbers_per_image"] == 512 + 4 * 512
    assert units["feature_cache_karpathy_train"]["kb_per_image"] == pytest.approx(2 * (512 + 4 * 512) / 1e3, abs=0.1)
    # the reward's document frequencies were counted once in each process that trained self-critical steps
    assert units["reward_setup"]["images"] == report["stages"][0]["counts"]["karpathy_train"] + \
        report["stages"][0]["counts"]["karpathy_restval"]
    assert [stage["stage"] for stage in report["stages"] for entry in stage.get("timings", [])
            if entry["event"] == "reward_setup"] == ["train_resume_1", "train_resume_2"]
    log = [json.loads(line) for line in (work / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum(entry["kind"] == "resume" for entry in log) == 2 and sum(entry["kind"] == "scst" for entry in log) == 2


def test_refuses_a_work_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert rehearse_coco.main(["--work", str(tmp_path), "--scale", "0.001"]) == 1
    assert "did not make" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_work_path_that_cannot_be_a_folder_is_refused_in_one_line(where, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    work = tmp_path / "notes.txt" if where == "a file" else tmp_path / "notes.txt" / "work"
    assert rehearse_coco.main(["--work", str(work), "--scale", "0.001"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--work" in err[0]
    assert (tmp_path / "notes.txt").read_text() == "mine"
