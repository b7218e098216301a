"""Training: checkpoints are self-describing, resume continues exactly, best.pt follows the validation metric."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from captioning import runtime
import train
from captioning import training
from captioning.training import loop, losses, run_folder, schedules, self_critical
from captioning.training.run import encode, restore
from captioning.checkpoint import CheckpointError, build_models, load_checkpoint
from captioning.config import Config, make_config
from conftest import tiny_config
from vocabulary import Vocabulary


def test_checkpoint_rebuilds_the_model_alone(trained_checkpoint):
    state = load_checkpoint(trained_checkpoint)
    encoder, decoder, vocab, config = build_models(state)
    assert config.backbone == "resnet18" and len(vocab) == decoder.vocab_size
    assert state["epoch"] >= 1 and "optimizer" in state and "scheduler" in state
    assert set(state["metrics"]) >= {"val_loss", "CIDEr", "Bleu_4"}
    again, _, _, _ = build_models(load_checkpoint(trained_checkpoint))
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(encoder(images), again(images))


def test_training_log_has_steps_and_epochs(trained_checkpoint):
    entries = training.read_log(trained_checkpoint.parent)
    kinds = [entry["kind"] for entry in entries]
    assert kinds[0] == "start" and kinds.count("epoch") == 2 and "step" in kinds
    epoch = [entry for entry in entries if entry["kind"] == "epoch"][-1]
    assert {"train_loss", "val_loss", "val_perplexity", "CIDEr", "Bleu_4", "lr"} <= set(epoch)
    step = next(entry for entry in entries if entry["kind"] == "step")
    assert step["perplexity"] == pytest.approx(2.718281828 ** step["loss"], rel=1e-6)


def test_best_checkpoint_is_the_best_by_cider(trained_checkpoint):
    history = load_checkpoint(trained_checkpoint.parent / "last.pt")["history"]
    best = load_checkpoint(trained_checkpoint)
    assert best["best_score"] == max(entry["CIDEr"] for entry in history)
    assert best["metrics"]["CIDEr"] == best["best_score"]


def test_best_follows_validation_score_not_the_last_epoch(synthetic_dir, tmp_path, monkeypatch):
    scores = iter([0.5, 0.9, 0.3])  # epoch 2 is the best, epoch 3 the last
    monkeypatch.setattr(loop, "validate", lambda run, loader, progress=True: {
        "val_loss": 1.0, "val_perplexity": 2.7, "CIDEr": next(scores), "Bleu_4": 0.1})
    training.train(tiny_config(synthetic_dir, tmp_path, epochs=3, max_steps_per_epoch=1), progress=False)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_on_epoch_sees_the_log_after_every_epoch(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", lambda run, loader, progress=True: {
        "val_loss": 1.0, "val_perplexity": 2.7, "CIDEr": 0.5, "Bleu_4": 0.1})
    seen = []
    training.train(tiny_config(synthetic_dir, tmp_path, epochs=2, max_steps_per_epoch=1), progress=False,
                on_epoch=lambda log: seen.append([entry["epoch"] for entry in log if entry["kind"] == "epoch"]))
    assert seen == [[1], [1, 2]]

def test_resume_continues_exactly(synthetic_dir, tmp_path):
    # Resumed with more epochs, which a plateau schedule takes in its stride (a cosine one stretches: see below).
    config = dict(max_steps_per_epoch=3, lr_schedule="plateau")
    straight = tmp_path / "straight"
    training.train(tiny_config(synthetic_dir, straight, epochs=2, **config), progress=False)
    split = tmp_path / "split"
    training.train(tiny_config(synthetic_dir, split, epochs=1, **config), progress=False)
    training.train(tiny_config(synthetic_dir, split, epochs=2, **config), resume=True, progress=False)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 6
    for key in a["decoder"]:
        assert torch.allclose(a["decoder"][key], b["decoder"][key], atol=1e-6), key
    assert a["scheduler"] == b["scheduler"]  # the schedule state survives the resume
    assert any(entry["kind"] == "resume" for entry in training.read_log(split))


def interrupt_step(monkeypatch, number: int):
    """Make the number-th call of loop.train_step raise KeyboardInterrupt (Ctrl-C); returns the real train_step."""
    real_step, calls = loop.train_step, {"n": 0}

    def interrupting(run, batch):
        calls["n"] += 1
        if calls["n"] == number:
            raise KeyboardInterrupt
        return real_step(run, batch)
    monkeypatch.setattr(loop, "train_step", interrupting)
    return real_step


def test_resume_mid_epoch_skips_the_batches_already_done(synthetic_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path, epochs=1)
    real_step = interrupt_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 0 and state["batches_done"] == 2 and state["global_step"] == 2
    monkeypatch.setattr(loop, "train_step", real_step)
    training.train(config, resume=True, progress=False)
    final = load_checkpoint(tmp_path / "last.pt")
    batches = -(-40 // config.batch_size)
    assert final["epoch"] == 1 and final["global_step"] == batches


def test_an_interrupted_epoch_reports_the_mean_loss_of_all_its_steps(synthetic_dir, tmp_path, monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path, epochs=1)
    losses = iter([1.0, 2.0])

    def fake_step(run, batch):  # two steps of known loss, then Ctrl-C
        try:
            return next(losses)
        except StopIteration:
            raise KeyboardInterrupt from None
    monkeypatch.setattr(loop, "train_step", fake_step)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, progress=False)
    monkeypatch.setattr(loop, "train_step", lambda run, batch: 10.0)
    training.train(config, resume=True, progress=False)
    batches = -(-40 // config.batch_size)
    history = load_checkpoint(tmp_path / "last.pt")["history"]
    assert history[-1]["train_loss"] == pytest.approx((1.0 + 2.0 + 10.0 * (batches - 2)) / batches)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"encoder": {}, "decoder": {}, "config": {}, "vocab": Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_gives_a_clear_error(trained_checkpoint, tmp_path):
    data = trained_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_vocabulary_that_does_not_fit_the_weights_is_reported(trained_checkpoint):
    state = load_checkpoint(trained_checkpoint)
    vocab = Vocabulary.from_dict(state["vocab"])
    vocab.add_word("zebra")
    state["vocab"] = vocab.to_dict()
    with pytest.raises(CheckpointError, match="do not fit"):
        build_models(state)


def test_config_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"hidden_size": 64, "_comment": "ignored"}))
    config = make_config(recipe, epochs=2, lr=None)
    assert config.hidden_size == 64 and config.epochs == 2 and config.lr == Config().lr
    recipe.write_text(json.dumps({"hiden_size": 64}))
    with pytest.raises(ValueError, match="hiden_size"):
        make_config(recipe)
    with pytest.raises(ValueError, match="pretrained"):
        make_config(None, pretrained="maybe")


def test_cli_overrides_recipe(synthetic_dir, tmp_path):
    code = train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out",
                       str(tmp_path), "--backbone", "resnet18", "--image-size", "32", "--resize-size", "32",
                       "--hidden-size", "48", "--embed-size", "16", "--epochs", "1", "--max-steps-per-epoch", "2",
                       "--vocab-threshold", "1", "--scst-epochs", "0", "--pretrain-epochs", "0",
                       "--object-features", "false", "--no-progress"])
    assert code == 0
    config = Config.from_dict(load_checkpoint(tmp_path / "last.pt")["config"])
    assert config.hidden_size == 48 and config.recipe == "configs/synthetic.json"


def test_cli_reports_a_wrong_data_dir(tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_scheduled_sampling_feeds_predictions_but_keeps_targets(synthetic_dir, tmp_path):
    run = training.build_run(tiny_config(synthetic_dir, tmp_path, scheduled_sampling=1.0, epochs=2))
    batch = next(iter(loop.make_loader(run, "train", "train"))).to(run.device)
    features = encode(run, batch)
    run.epoch = 0
    assert losses.sampled_inputs(run, batch, features) is None  # the ramp starts at zero
    run.epoch = 1
    inputs = losses.sampled_inputs(run, batch, features)
    padding = batch.captions == run.vocab.pad_index
    assert torch.equal(inputs[padding], batch.captions[padding]) and torch.equal(inputs[:, 0], batch.captions[:, 0])
    assert not torch.equal(inputs, batch.captions)  # an untrained model's guesses differ from the captions
    loss, words = losses.caption_loss(run, batch, features, inputs)
    assert loss.item() > 0 and words == (~padding[:, 1:]).sum()


@pytest.mark.skipif(not runtime.cpu_runs("bf16"), reason="this CPU cannot run the LSTM in bf16 (oneDNN needs "
                                                           "AVX-512 for it)")
def test_a_bf16_training_step_keeps_fp32_weights_and_learns(synthetic_dir, tmp_path):
    run = training.build_run(tiny_config(synthetic_dir, tmp_path, precision="bf16", bow_loss_weight=1.0))
    batch = next(iter(loop.make_loader(run, "train", "train"))).to(run.device)
    losses = [loop.train_step(run, batch) for _ in range(8)]
    parameters = list(run.encoder.parameters()) + list(run.decoder.parameters())
    assert all(parameter.dtype == torch.float32 for parameter in parameters)
    assert all(parameter.grad is None or parameter.grad.dtype == torch.float32 for parameter in parameters)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]  # the same batch: its loss falls


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_precision_the_cpu_cannot_run_is_refused_in_one_line_before_anything_is_written(
        synthetic_dir, tmp_path, monkeypatch, capsys, precision):
    monkeypatch.setattr(runtime, "cpu_runs", lambda asked: asked == "fp32")  # an AVX2-only CPU, say
    out = tmp_path / "run"
    assert train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out", str(out),
                       "--precision", precision, "--device", "cpu", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"precision {precision} cannot run on this CPU" in error
    assert "auto or fp32" in error and not out.exists()


def test_a_run_resumed_on_a_cpu_that_cannot_run_its_precision_takes_the_one_given(trained_checkpoint, tmp_path,
                                                                                  monkeypatch, capsys):
    monkeypatch.setattr(runtime, "cpu_runs", lambda asked: asked == "fp32")
    out = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, out)
    assert train.main(["--out", str(out), "--resume", "--epochs", "3", "--precision", "bf16"]) == 2
    assert "precision bf16 cannot run" in capsys.readouterr().err
    assert train.main(["--out", str(out), "--resume", "--epochs", "3", "--precision", "auto", "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["config"]["precision"] == "auto"


def test_a_run_saved_without_a_gradient_scaler_resumes_in_fp16_with_one(trained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_runs", lambda asked: True)  # fp16 is scaled on a GPU; the CPU stands in here
    state = load_checkpoint(trained_checkpoint.parent / "last.pt")
    assert state["scaler"] == {}  # an fp32 run's
    config = Config.from_dict(state["config"]).replace(precision="fp16", out=str(tmp_path), device="cpu")
    run = training.build_run(config, vocab=Vocabulary.from_dict(state["vocab"]))
    assert run.scaler.is_enabled()
    restore(run, state)
    assert run.epoch == state["epoch"] and run.scaler.get_scale() == 2.0 ** 16  # a fresh scaler's


def test_cosine_schedule_decays_every_group_to_zero_over_the_run(synthetic_dir, tmp_path):
    run = training.build_run(tiny_config(synthetic_dir, tmp_path, lr_schedule="cosine", lr=1e-3, backbone_lr=1e-4))
    schedule = run.scheduler
    assert isinstance(schedule, schedules.CosineSchedule)
    rates = []
    for fraction in (0.0, 0.25, 0.5, 1.0):
        schedule.set_position(fraction)
        rates.append([group["lr"] for group in run.optimizer.param_groups])
    assert rates[0] == pytest.approx([1e-3, 1e-4])
    assert rates[2] == pytest.approx([5e-4, 5e-5])  # half way down the cosine
    assert rates[1][0] > rates[2][0] > rates[3][0] == 0.0
    schedule.step(0.5)  # a validation score changes nothing
    assert [group["lr"] for group in run.optimizer.param_groups] == rates[3]


def test_cosine_schedule_sets_the_rate_before_each_step(synthetic_dir, tmp_path):
    training.train(tiny_config(synthetic_dir, tmp_path, epochs=2, max_steps_per_epoch=2, lr_schedule="cosine",
                            lr=1e-3, log_every=1), progress=False)
    steps = [entry for entry in training.read_log(tmp_path) if entry["kind"] == "step"]
    # 4 steps at positions 0, 1/4, 2/4, 3/4 of the run.
    assert [entry["lr"] for entry in steps] == pytest.approx([1e-3, 8.5355e-4, 5e-4, 1.4645e-4], rel=1e-4)


def straight_and_interrupted(synthetic_dir, tmp_path, monkeypatch, step: int, **config) -> tuple[dict, dict]:
    """last.pt of a run trained straight through (tmp_path/straight), and of the same run interrupted at its step-th
    step, then resumed (tmp_path/split)."""
    training.train(tiny_config(synthetic_dir, tmp_path / "straight", **config), progress=False)
    real_step = interrupt_step(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_config(synthetic_dir, tmp_path / "split", **config), progress=False)
    monkeypatch.setattr(loop, "train_step", real_step)
    training.train(tiny_config(synthetic_dir, tmp_path / "split", **config), resume=True, progress=False)
    return load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")


def test_interrupted_cosine_run_resumes_on_the_same_curve(synthetic_dir, tmp_path, monkeypatch):
    a, b = straight_and_interrupted(synthetic_dir, tmp_path, monkeypatch, 4,  # the first step of epoch 2
                                    epochs=2, max_steps_per_epoch=3, lr_schedule="cosine")
    assert a["global_step"] == b["global_step"] == 6
    for key in a["decoder"]:
        assert torch.allclose(a["decoder"][key], b["decoder"][key], atol=1e-6), key
    steps = lambda out: [(entry["step"], entry["lr"]) for entry in training.read_log(out) if entry["kind"] == "step"]
    assert steps(tmp_path / "split") == steps(tmp_path / "straight")  # the same rate at every step


def test_self_critical_epochs_train_the_decoder_for_cider_and_leave_the_cnn_alone(synthetic_dir, tmp_path,
                                                                                  monkeypatch):
    config = tiny_config(synthetic_dir, tmp_path, epochs=1, scst_epochs=1, scst_lr=1e-3, max_steps_per_epoch=3,
                         lr_schedule="cosine")
    real_step, seen = loop.scst_step, {}

    def remember_first(run, batch):
        if not seen:
            seen["encoder"] = {k: v.clone() for k, v in run.encoder.state_dict().items()}
            seen["decoder"] = {k: v.clone() for k, v in run.decoder.state_dict().items()}
            seen["epoch"] = run.epoch
        seen.setdefault("inputs", set()).add(batch.images.dim())
        return real_step(run, batch)
    monkeypatch.setattr(loop, "scst_step", remember_first)
    data_caches = set(synthetic_dir.glob("cache/features_*"))
    training.train(config, progress=False)
    assert seen["epoch"] == 1  # the self-critical epoch comes after the cross-entropy one
    state = load_checkpoint(tmp_path / "last.pt")
    for key, value in seen["encoder"].items():
        assert torch.equal(state["encoder"][key], value), key  # BatchNorm statistics included
    assert any(not torch.equal(state["decoder"][key], value) for key, value in seen["decoder"].items())
    log = training.read_log(tmp_path)
    steps = [entry for entry in log if entry["kind"] == "step" and entry["epoch"] == 2]
    assert steps and all("reward" in entry and entry["lr"] == 1e-3 for entry in steps)
    epochs = [entry for entry in log if entry["kind"] == "epoch"]
    assert "train_loss" in epochs[0] and "train_reward" in epochs[1] and epochs[1]["train_reward"] >= 0
    assert [entry["kind"] for entry in log].count("scst") == 1
    # The CNN is fixed in those epochs, so its pooled features are computed once and cached (batches hold
    # (images, 2048) rows, not pixels), with the run, since the weights are the run's own.
    assert seen["inputs"] == {2}
    assert {path.name.split("_")[1] for path in (tmp_path / "cache").glob("features_*.npy")} == {"train", "val"}
    assert set(synthetic_dir.glob("cache/features_*")) == data_caches  # none in the shared data folder


def test_a_finished_run_goes_on_with_self_critical_epochs_at_the_rate_given(synthetic_dir, tmp_path):
    training.train(tiny_config(synthetic_dir, tmp_path, max_steps_per_epoch=2), progress=False)
    # As from the command line: only the flags given are the caller's; the rest comes from last.pt.
    training.train(tiny_config(synthetic_dir, tmp_path, scst_epochs=1, scst_lr=2e-4, scst_samples=3,
                            max_steps_per_epoch=2),
                resume=True, progress=False, given={"scst_epochs", "scst_lr", "scst_samples"})
    log = training.read_log(tmp_path)
    assert [(entry["lr"], entry["samples"]) for entry in log if entry["kind"] == "scst"] == [(2e-4, 3)]
    steps = [entry for entry in log if entry["kind"] == "step" and entry["epoch"] == 2]
    assert len(steps) == 2 and all("reward" in entry and entry["lr"] == 2e-4 for entry in steps)


def test_the_reward_scores_the_end_of_a_caption_so_that_one_cut_off_after_on_a_pays_less():
    """Rennie et al. 2017, appendix E: without <end> as a word, "... on a <end>" keeps every n-gram of the complete
    caption but its last ones, and self-critical training learned to stop there (docs/EXPERIMENTS.md)."""
    from types import SimpleNamespace
    references = ["a red circle on a striped background", "a red circle and nothing else on a striped background",
                  "one shape on a striped background", "a striped background with a red circle"]
    vocab = Vocabulary()
    for word in " ".join(references + ["."]).split():
        vocab.add_word(word)
    dataset = SimpleNamespace(image_ids=[1, 2], captions={1: [r.split() for r in references],
                                                          2: [["a", "blue", "square", "on", "grass"]] * 4})
    run = SimpleNamespace(vocab=vocab)
    self_critical.start_scst(run, SimpleNamespace(dataset=dataset))
    ids = lambda text: [vocab(word) for word in text.split()] + [vocab.end_index, vocab.pad_index]
    end = str(vocab.end_index)
    expected = [str(vocab(word)) for word in "a red circle on a".split()] + [end]  # no ".", then <end>
    assert self_critical.reward_tokens(run, ids("a red circle . on a")).split() == expected
    assert self_critical.reward_tokens(run, ids("a red circle")[:-2]).split()[-1] != end  # never ended: no <end> to score
    refs = [self_critical.reward_tokens(run, ids(reference)) for reference in references]
    whole, cut = (run.reward.score(self_critical.reward_tokens(run, ids(text)), refs)
                  for text in ("a red circle on a striped background", "a red circle on a"))
    unscored = lambda text: " ".join(self_critical.reward_tokens(run, ids(text)).split()[:-1])
    without_end = [unscored(reference) for reference in references]
    assert cut < whole
    # What <end> changes: the cut-off caption loses more of the whole one's reward than when <end> is not scored.
    ratio_without_end = (run.reward.score(unscored("a red circle on a"), without_end)
                         / run.reward.score(unscored("a red circle on a striped background"), without_end))
    assert cut / whole < ratio_without_end


def test_scst_settings_are_checked():
    with pytest.raises(ValueError, match="scst_samples"):
        Config(scst_samples=1).validate()
    with pytest.raises(ValueError, match="do not combine"):
        Config(epochs=3, scst_epochs=1, early_stop_patience=2).validate()


def test_the_time_left_counts_each_kind_of_epoch_at_its_own_pace():
    from types import SimpleNamespace
    run = SimpleNamespace(config=Config(epochs=4, scst_epochs=2), epoch=2,
                          history=[{"train_loss": 1.0, "seconds": 100.0}, {"train_loss": 0.9, "seconds": 120.0}])
    assert loop.time_left(run) == 4 * 110.0  # no self-critical epoch yet: assumed as long as the others
    run.epoch = 5
    run.history += [{"train_loss": 0.8, "seconds": 110.0}, {"train_loss": 0.7, "seconds": 110.0},
                    {"train_reward": 2.0, "seconds": 20.0}]
    assert loop.time_left(run) == 20.0
    assert training.format_duration(40) == "40 s" and training.format_duration(600) == "10 min"
    assert training.format_duration(5400) == "1.5 h"


def test_a_new_run_never_replaces_the_run_already_in_its_folder(trained_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, out)
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "train_log.jsonl")}
    with pytest.raises(CheckpointError, match="holds a training run already .*--resume.*--overwrite"):
        training.train(tiny_config(synthetic_dir, out, max_steps_per_epoch=1), progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before
    training.train(tiny_config(synthetic_dir, out, max_steps_per_epoch=1), progress=False, overwrite=True)
    assert load_checkpoint(out / "last.pt")["global_step"] == 1  # asked for: replaced


def test_one_run_at_a_time_in_a_folder_and_a_crashed_run_does_not_block_it(synthetic_dir, tmp_path):
    import fcntl

    config = tiny_config(synthetic_dir, tmp_path, max_steps_per_epoch=1)
    (tmp_path / training.LOCK_NAME).write_text("pid 1 on a machine that crashed\n")  # left by a killed run
    with open(tmp_path / training.LOCK_NAME, "a+") as held:  # a run in progress holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CheckpointError, match="another training run .* is using"):
            training.train(config, progress=False)
        assert not (tmp_path / "last.pt").exists()
    training.train(config, progress=False)  # the lock died with its holder
    assert (tmp_path / "last.pt").exists()


def test_a_diverging_run_stops_with_an_error_and_never_saves_nan_weights(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out", str(out),
                       "--backbone", "resnet18", "--image-size", "32", "--resize-size", "32", "--embed-size", "16",
                       "--hidden-size", "32", "--vocab-threshold", "1", "--scst-epochs", "0", "--epochs", "1",
                       "--lr", "1e30", "--backbone-lr", "1e30", "--pretrain-epochs", "0",
                       "--object-features", "false", "--no-progress"]) == 1
    assert "diverged" in capsys.readouterr().err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_divergence_after_a_good_epoch_leaves_that_epoch_as_best(synthetic_dir, tmp_path, monkeypatch):
    real_loss = losses.caption_loss

    def nan_in_epoch_two(run, batch, features, inputs=None):
        loss, count = real_loss(run, batch, features, inputs)
        return (loss * float("nan"), count) if run.epoch == 1 else (loss, count)
    monkeypatch.setattr(losses, "caption_loss", nan_in_epoch_two)
    with pytest.raises(training.TrainingFailed, match="training loss became nan at epoch 2"):
        training.train(tiny_config(synthetic_dir, tmp_path, epochs=2, max_steps_per_epoch=2), progress=False)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in best["decoder"].values() if value.is_floating_point())


def test_an_epoch_in_which_no_image_could_be_read_is_an_error(synthetic_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    for image in (data / "images" / "train").iterdir():
        image.write_bytes(b"not an image")
    with pytest.raises(training.TrainingFailed, match="trained no step"):
        training.train(tiny_config(data, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_a_full_disk_while_saving_is_one_error_and_the_log_and_checkpoints_stay_true(synthetic_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    from captioning import checkpoint
    real_save, saves = torch.save, {"n": 0}

    def disk_full_on_the_second_epoch(state, file):
        saves["n"] += 1
        if state["epoch"] == 2:
            file.write(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4344")
        real_save(state, file)
    monkeypatch.setattr(checkpoint.torch, "save", disk_full_on_the_second_epoch)
    code = train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out",
                       str(tmp_path), "--backbone", "resnet18", "--image-size", "32", "--resize-size", "32",
                       "--embed-size", "16", "--hidden-size", "32", "--vocab-threshold", "1", "--scst-epochs", "0",
                       "--epochs", "2", "--max-steps-per-epoch", "1", "--precision", "fp32", "--pretrain-epochs", "0",
                       "--object-features", "false",
                       "--no-progress"])
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: could not write the checkpoint") and "is intact" in err[-1]
    assert [entry["epoch"] for entry in training.read_log(tmp_path) if entry["kind"] == "epoch"] == [1]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1 and not list(tmp_path.glob("*.tmp"))


def test_a_validation_split_without_one_readable_image_is_refused_before_training(synthetic_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data, ignore=shutil.ignore_patterns("cache"))
    for image in (data / "images" / "val").iterdir():
        image.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="no image of the split 'val' .* can be read"):
        training.build_run(tiny_config(data, tmp_path / "run"))


def test_a_checkpoint_with_flipped_bytes_is_refused_not_loaded_altered(trained_checkpoint, tmp_path):
    data = bytearray(trained_checkpoint.read_bytes())
    middle = len(data) // 2  # inside a tensor's record
    data[middle:middle + 64] = bytes(byte ^ 0xFF for byte in data[middle:middle + 64])
    damaged = tmp_path / "best.pt"
    damaged.write_bytes(data)
    with pytest.raises(CheckpointError, match="is damaged: its record .* does not match its checksum"):
        load_checkpoint(damaged)


@pytest.mark.parametrize("craft", ["huge sizes", "weights that are not tensors"])
def test_a_crafted_checkpoint_is_refused_before_any_model_is_built(craft, trained_checkpoint, tmp_path, monkeypatch):
    from captioning import checkpoint
    state = load_checkpoint(trained_checkpoint)
    if craft == "huge sizes":
        state["config"]["hidden_size"] = state["config"]["embed_size"] = 1_000_000  # a 10^12-weight LSTM
    else:
        state["decoder"]["fc.weight"] = [[0.0] * 4]
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    monkeypatch.setattr(checkpoint, "EncoderCNN", lambda *args, **kwargs: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match="do not fit its settings|not a checkpoint of this project"):
        checkpoint.build_models(load_checkpoint(crafted))


def test_pretrained_yes_without_reachable_weights_is_one_line_not_a_traceback(synthetic_dir, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, *args, **kwargs: (_ for _ in ()).throw(OSError(f"offline: {url}")))
    code = train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out",
                       str(tmp_path / "run"), "--pretrained", "yes", "--epochs", "1", "--scst-epochs", "0",
                       "--pretrain-epochs", "0", "--object-features", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: could not load the ImageNet weights for resnet18")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resize_zero_is_resolved_once_and_stored_with_the_run(synthetic_dir, tmp_path):
    training.train(tiny_config(synthetic_dir, tmp_path / "run", resize_size=0, pretrained="no",
                            max_steps_per_epoch=1, val_max_images=4), progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["config"]
    assert saved["resize_size"] == round(32 * 8 / 7)  # no ImageNet weights: 8/7 of the crop


def test_fine_tuning_starts_at_its_rate_and_early_stopping_waits_for_it(synthetic_dir, tmp_path, monkeypatch):
    # configs/coco.json's shape in miniature: a frozen backbone, a plateau schedule that cuts every epoch without
    # improvement, early stopping after one such epoch, fine-tuning planned from epoch 4. The score never improves
    # after epoch 1, so without care the run would stop at epoch 2 and fine-tuning would start at a cut rate.
    monkeypatch.setattr(loop, "validate", lambda run, loader, progress=True: {
        "val_loss": 1.0, "val_perplexity": 2.7, "CIDEr": 0.5, "Bleu_4": 0.1})
    config = tiny_config(synthetic_dir, tmp_path, epochs=6, max_steps_per_epoch=1, pretrained="no",
                         train_backbone="no", lr_schedule="plateau", lr=1e-3, backbone_lr=1e-5, lr_patience=0,
                         lr_factor=0.5, early_stop_patience=1, fine_tune_after=3)
    history = training.train(config, progress=False)
    log = training.read_log(tmp_path)
    fine_tune = [entry for entry in log if entry["kind"] == "fine_tune"]
    assert len(fine_tune) == 1 and fine_tune[0]["epoch"] == 4
    assert fine_tune[0]["backbone_lr"] == 1e-5  # as documented, not cut by the frozen phase's plateau
    assert fine_tune[0]["lr"] == 1e-3 * 0.5 * 0.5  # the head's rate goes on where the schedule took it
    # Epochs 2 and 3 do not stop the run (fine-tuning is ahead); epoch 4, the first of fine-tuning, starts a fresh
    # patience, and as it does not improve either, early stopping ends the run there.
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4]
    config = config.replace(out=str(tmp_path / "without"), fine_tune_after=-1)
    assert len(training.train(config, progress=False)) == 2  # nothing planned: early stopping ends it at epoch 2


def test_loaders_are_built_once_per_phase_not_every_epoch(synthetic_dir, tmp_path, monkeypatch):
    built = []
    make_loader = loop.make_loader
    monkeypatch.setattr(loop, "make_loader", lambda run, mode, *args: built.append((run.epoch + 1, mode))
                        or make_loader(run, mode, *args))
    # Two frozen epochs from the feature cache, then two fine-tuning epochs on images.
    training.train(tiny_config(synthetic_dir, tmp_path, epochs=4, max_steps_per_epoch=1, pretrained="no",
                            train_backbone="no", lr_schedule="plateau", fine_tune_after=2), progress=False)
    assert built == [(1, "train"), (1, "val"), (3, "train"), (3, "val")]


def test_a_recipe_shortens_to_any_number_of_epochs(synthetic_dir, tmp_path):
    # The synthetic recipe plans cross-entropy epochs, then self-critical ones: --epochs 2 shortens the first
    # stage and keeps the second (here shortened too, to keep the test short).
    assert train.main(["--config", "configs/synthetic.json", "--data-dir", str(synthetic_dir), "--out",
                       str(tmp_path), "--epochs", "2", "--scst-epochs", "1", "--image-size", "32", "--resize-size",
                       "32", "--embed-size", "16", "--hidden-size", "32", "--vocab-threshold", "1",
                       "--max-steps-per-epoch", "1", "--precision", "fp32", "--pretrain-epochs", "0",
                       "--object-features", "false",
                       "--no-progress"]) == 0
    epochs = [entry for entry in training.read_log(tmp_path) if entry["kind"] == "epoch"]
    assert ["train_loss" in entry for entry in epochs] == [True, True, False]
    assert "train_reward" in epochs[2]


def folder_contents(out) -> dict:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and path.name != training.LOCK_NAME}


def test_an_overwrite_that_fails_before_its_first_checkpoint_leaves_the_old_run_whole(trained_checkpoint,
                                                                                      synthetic_dir, tmp_path,
                                                                                      monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, out)
    before = folder_contents(out)

    def diverged(run, loader, log, progress=True):
        raise training.TrainingFailed("the loss became inf")
    monkeypatch.setattr(loop, "train_one_epoch", diverged)
    with pytest.raises(training.TrainingFailed):
        training.train(tiny_config(synthetic_dir, out, max_steps_per_epoch=1), progress=False, overwrite=True)
    assert folder_contents(out) == before  # its log, checkpoints and vocabulary, and nothing of the new run
    assert "run it was to replace is back" in capsys.readouterr().err


def test_an_overwrite_interrupted_mid_epoch_replaces_the_old_run_whole(trained_checkpoint, synthetic_dir, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(trained_checkpoint.parent, out)

    def interrupted(run, batch):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_config(synthetic_dir, out, max_steps_per_epoch=1), progress=False, overwrite=True)
    assert load_checkpoint(out / "last.pt")["epoch"] == 0  # the new run's, to resume
    assert not (out / "best.pt").exists() and not (out / run_folder.REPLACED_NAME).exists()
    assert all(entry["kind"] != "epoch" for entry in training.read_log(out))  # no epoch of the old run in its log


def test_a_run_set_aside_by_a_killed_overwrite_comes_back_at_the_next_command(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"old")
    (tmp_path / "train_log.jsonl").write_text("old\n")
    run_folder.set_run_aside(tmp_path)
    (tmp_path / "vocab.pkl").write_bytes(b"new")  # the new run was killed (SIGKILL) before its first save
    run_folder.settle_replaced_run(tmp_path)
    assert folder_contents(tmp_path) == {"last.pt": b"old", "train_log.jsonl": b"old\n"}
    (tmp_path / run_folder.REPLACING_NAME).mkdir()  # killed while setting the old run aside
    (tmp_path / "last.pt").rename(tmp_path / run_folder.REPLACING_NAME / "last.pt")
    run_folder.settle_replaced_run(tmp_path)
    assert folder_contents(tmp_path) == {"last.pt": b"old", "train_log.jsonl": b"old\n"}


def test_a_loss_that_runs_away_while_finite_stops_the_run_as_divergence(synthetic_dir, tmp_path, monkeypatch):
    real_loss = losses.caption_loss

    def runaway(run, batch, features, inputs=None):  # what weights thrown to 1e30 by --lr 1e30 produce
        loss, count = real_loss(run, batch, features, inputs)
        return loss * 1e30, count
    monkeypatch.setattr(losses, "caption_loss", runaway)
    with pytest.raises(training.TrainingFailed, match="diverged"):
        training.train(tiny_config(synthetic_dir, tmp_path, max_steps_per_epoch=2), progress=False)
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()


def test_a_checkpoint_with_nan_weights_is_refused_rather_than_captioning_nothing(trained_checkpoint, synthetic_dir,
                                                                                 tmp_path, capsys):
    import caption
    state = load_checkpoint(trained_checkpoint)
    state["decoder"]["fc.weight"] = torch.full_like(state["decoder"]["fc.weight"], float("nan"))
    crafted = tmp_path / "nan.pt"
    torch.save(state, crafted)
    image = next((synthetic_dir / "images" / "test").iterdir())
    assert caption.main(["--checkpoint", str(crafted), str(image)]) != 0
    error = capsys.readouterr().err
    assert "fc.weight holds NaN" in error and error.count("\n") == 1


def test_a_run_interrupted_with_augmentation_on_resumes_as_if_never_stopped(synthetic_dir, tmp_path, monkeypatch):
    # Random crops and flips drawn for a batch that the interruption kept from training must be drawn again, the
    # same, by the resumed run: the augmentation is a function of (seed, epoch, image), not of a stream's state.
    # Interrupted at the second step: its batch is loaded, its crops drawn, and it is not trained.
    a, b = straight_and_interrupted(synthetic_dir, tmp_path, monkeypatch, 2, epochs=2, max_steps_per_epoch=3,
                                    resize_size=40, random_crop=True, hflip=True, attention=False)
    assert a["global_step"] == b["global_step"] == 6
    for part in ("encoder", "decoder"):
        for key in a[part]:
            assert torch.allclose(a[part][key].float(), b[part][key].float(), atol=1e-6), (part, key)


def test_resuming_a_finished_run_says_so_and_leaves_it_as_it_is(synthetic_dir, tmp_path, capsys):
    """--resume of a run that trained all its epochs: one line saying it is finished and how to go on, no
    "resuming ... epoch 2" of 1, and its log and checkpoints untouched."""
    config = tiny_config(synthetic_dir, tmp_path, max_steps_per_epoch=2)
    history = training.train(config, progress=False)
    log, last = (tmp_path / training.LOG_NAME).read_bytes(), (tmp_path / "last.pt").read_bytes()
    capsys.readouterr()
    assert training.train(config, resume=True, progress=False) == history
    out = capsys.readouterr().out
    assert "finished run (1 of 1 epochs)" in out and "--epochs" in out and "resuming from" not in out
    assert (tmp_path / training.LOG_NAME).read_bytes() == log and (tmp_path / "last.pt").read_bytes() == last
