"""Tests for metrics.py: known answers from pycocoevalcap, the Python tokenizer fallback, the image-blind baseline."""
import random
import subprocess
import sys
import warnings

import pytest

from captioning import metrics
from conftest import ROOT

JAVA = metrics.java_available()
needs_java = pytest.mark.skipif(not JAVA, reason="needs Java (pycocoevalcap's PTB tokenizer and METEOR)")

ALL_KEYS = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}

# Distinct scenes, so that CIDEr's IDF (computed from the scored set's references) is informative.
REFERENCES = {
    1: ["A brown dog runs across the green grass.", "A dog running on a lawn.", "The brown dog is running outside."],
    2: ["Two cats sleep on a red sofa.", "A pair of cats sleeping on the couch.", "Cats napping on a red sofa."],
    3: ["A man rides a wave on his surfboard.", "A surfer riding a big wave.", "A man surfing in the ocean."],
    4: ["A plate of pasta with tomato sauce.", "Spaghetti and sauce on a white plate.", "A dish of pasta on a table."],
    5: ["A red bus parked on a city street.", "A double decker bus on the road.", "A bus stopped by the curb."],
}
PERFECT = {image_id: refs[0] for image_id, refs in REFERENCES.items()}

# (caption, what pycocoevalcap's PTBTokenizer makes of it), as observed from the Java tokenizer.
TOKENIZER_CASES = [
    ("A dog (brown) runs.", "a dog -lrb- brown -rrb- runs"),
    ("Mr. Smith's cat isn't here, it's there!", "mr. smith 's cat is n't here it 's there"),
    ('A "quoted" word and \'single\' quotes.', "a quoted word and single quotes"),
    ("black-and-white photo of a 1,000 ft. tower; 3.5 m/s", "black-and-white photo of a 1,000 ft. tower 3.5 m/s"),
    ("Two dogs... playing -- together?", "two dogs playing together"),
    ("The U.S. flag at 10:30, 50% off", "the u.s. flag at 10:30 50 % off"),
    ("We'd've gone: I cannot wait", "we 'd 've gone i can not wait"),
    ("The dogs' toys - a man w/ a hat", "the dogs toys a man w / a hat"),
    ("A caption\nwith a newline", "a caption with a newline"),
    ("", ""),
]


def test_tokenizer_fallback_matches_known_ptb_output():
    tokenized = metrics.tokenize_captions({"cases": [caption for caption, _ in TOKENIZER_CASES]}, use_java=False)
    assert tokenized["cases"] == [expected for _, expected in TOKENIZER_CASES]


@needs_java
def test_java_tokenizer_gives_the_expected_output_too(capfd):
    tokenized = metrics.tokenize_captions({"cases": [caption for caption, _ in TOKENIZER_CASES]}, use_java=True)
    assert "PTBTokenizer tokenized" not in capfd.readouterr().err  # its count after every call is not shown
    assert tokenized["cases"] == [expected for _, expected in TOKENIZER_CASES]



@needs_java
def test_java_tokenizer_writes_nothing_into_its_package_folder(monkeypatch, tmp_path):
    # Where site-packages is read-only, pycocoevalcap's tokenizer failed at the first validation, after an epoch:
    # it wrote its input file into its own folder. Here that folder is one nothing can be written into.
    from pycocoevalcap.tokenizer import ptbtokenizer
    monkeypatch.setattr(ptbtokenizer, "__file__", str(tmp_path / "not-writable" / "ptbtokenizer.py"))
    tokenized = metrics.tokenize_captions({"cases": [caption for caption, _ in TOKENIZER_CASES]}, use_java=True)
    assert tokenized["cases"] == [expected for _, expected in TOKENIZER_CASES]
    assert not (tmp_path / "not-writable").exists()

def test_perfect_candidates_score_one_and_key_names():
    scores = metrics.score_captions(REFERENCES, PERFECT, use_java=False)
    assert set(scores) == ALL_KEYS - {"METEOR"}  # METEOR needs Java
    assert scores["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE_L"] == 1.0
    assert scores["CIDEr"] > 1.0


def test_disjoint_candidates_score_zero():
    disjoint = dict.fromkeys(REFERENCES, "zebra xylophone quartz")
    scores = metrics.score_captions(REFERENCES, disjoint, use_java=False)
    assert scores["Bleu_1"] < 1e-6
    assert scores["ROUGE_L"] == 0.0
    assert scores["CIDEr"] == 0.0


def test_cider_ranks_perfect_above_partial_above_nothing():
    partial = {image_id: " ".join(caption.split()[:3]) for image_id, caption in PERFECT.items()}
    perfect = metrics.score_captions(REFERENCES, PERFECT, metrics="CIDEr", use_java=False)["CIDEr"]
    partly = metrics.score_captions(REFERENCES, partial, metrics="CIDEr", use_java=False)["CIDEr"]
    assert perfect > partly > 0.0


def test_per_image_scores_cover_every_image_and_average_to_the_corpus_score():
    candidates = {**PERFECT, 4: "a plate of food", 5: "zebra xylophone"}
    scores, per_image = metrics.score_captions(REFERENCES, candidates, use_java=False, per_image=True)
    assert set(per_image) == set(scores)
    for key in scores:
        assert set(per_image[key]) == set(REFERENCES)
    for key in ("CIDEr", "ROUGE_L"):  # corpus score = mean of the image scores for these two
        assert scores[key] == pytest.approx(sum(per_image[key].values()) / len(REFERENCES))
    assert per_image["CIDEr"][5] == 0.0
    assert per_image["CIDEr"][1] > per_image["CIDEr"][4] > 0.0


def test_only_candidate_images_are_scored():
    subset = {1: PERFECT[1], 2: PERFECT[2], 3: "zebra xylophone"}
    _, per_image = metrics.score_captions(REFERENCES, subset, metrics="BLEU", use_java=False, per_image=True)
    assert set(per_image["Bleu_1"]) == {1, 2, 3}


def test_empty_candidate_is_an_empty_hypothesis():
    candidates = {**PERFECT, 3: ""}
    scores, per_image = metrics.score_captions(REFERENCES, candidates, use_java=False, per_image=True)
    for key in scores:
        assert per_image[key][3] == 0.0
    assert per_image["CIDEr"][1] > 0.0
    assert 0.0 < scores["Bleu_1"] < 1.0


@needs_java
def test_java_and_python_paths_agree_on_bleu_and_cider():
    candidates = {1: "a brown dog, running on the grass.", 2: "two cats on a red sofa!", 3: "a man's surfboard; waves.",
                  4: "pasta -- with sauce", 5: "a bus (red) on the street?"}
    java = metrics.score_captions(REFERENCES, candidates, metrics=("BLEU", "CIDEr"), use_java=True)
    python = metrics.score_captions(REFERENCES, candidates, metrics=("BLEU", "CIDEr"), use_java=False)
    assert set(java) == set(python) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"}
    assert java == pytest.approx(python, abs=1e-12)
    assert 0.0 < java["CIDEr"] < 10.0


@pytest.mark.filterwarnings("ignore:Java not found")
def test_metric_subset_never_starts_meteor(monkeypatch):
    def no_meteor(*args, **kwargs):
        raise AssertionError("METEOR was started for a subset without it")

    monkeypatch.setattr(metrics, "Meteor", no_meteor)
    scores = metrics.score_captions(REFERENCES, PERFECT, metrics=metrics.FAST_METRICS)  # Java if present
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"}


@needs_java
def test_meteor_with_java():
    """The single METEOR run of this file: perfect, disjoint and empty candidates together."""
    candidates = {**PERFECT, 2: "zebra xylophone quartz", 3: ""}
    scores, per_image = metrics.score_captions(REFERENCES, candidates, per_image=True)
    assert set(scores) == ALL_KEYS
    assert per_image["METEOR"][1] > 0.95
    assert per_image["METEOR"][2] < 0.05
    assert per_image["METEOR"][3] == 0.0
    assert 0.0 < scores["METEOR"] < 1.0


def test_without_java_meteor_is_skipped_with_one_warning(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    metrics._warn_java_missing.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = metrics.score_captions(REFERENCES, PERFECT)
        second = metrics.score_captions(REFERENCES, PERFECT)
    messages = [str(warning.message) for warning in caught]
    assert messages == [metrics.JAVA_MISSING_MESSAGE]
    assert "Java not found" in messages[0] and "METEOR skipped" in messages[0]
    assert set(first) == set(second) == ALL_KEYS - {"METEOR"}
    assert first["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="use_java=True"):
        metrics.score_captions(REFERENCES, PERFECT, use_java=True)
    metrics._warn_java_missing.cache_clear()


def test_candidate_without_references_is_rejected():
    with pytest.raises(ValueError, match="image id 99"):
        metrics.score_captions(REFERENCES, {1: PERFECT[1], 99: "a dog"}, use_java=False)
    with pytest.raises(ValueError, match="image id 1"):
        metrics.score_captions({1: []}, {1: "a dog"}, use_java=False)
    with pytest.raises(ValueError, match="Unknown metric 'SPICE'"):
        metrics.score_captions(REFERENCES, PERFECT, metrics=("BLEU", "SPICE"), use_java=False)
    with pytest.raises(ValueError, match="No metric requested"):
        metrics.score_captions(REFERENCES, PERFECT, metrics=(), use_java=False)
    with pytest.raises(TypeError, match="image id 1"):
        metrics.score_captions({1: "a dog on grass"}, {1: "a dog"}, use_java=False)


def _shape_references(n_images: int, seed: int) -> dict[int, list[str]]:
    """Five template captions for each of n_images random (colour, shape, background) scenes."""
    rng = random.Random(seed)
    references = {}
    for image_id in range(n_images):
        colour = rng.choice(["red", "blue", "green", "yellow", "purple"])
        shape = rng.choice(["circle", "square", "triangle", "star"])
        background = rng.choice(["white", "black", "gray"])
        references[image_id] = [
            f"A {colour} {shape} on a {background} background.",
            f"There is a {colour} {shape} in the picture.",
            f"A {shape} that is {colour}.",
            f"One {colour} {shape}, drawn on {background}.",
            f"The image shows a single {colour} {shape} on a {background} background.",
        ]
    return references


def test_best_constant_caption_beats_random_training_captions_and_is_deterministic():
    train = _shape_references(150, seed=0)
    val = _shape_references(80, seed=1)
    best = metrics.best_constant_caption(train, use_java=False)
    reordered = dict(reversed(list(train.items())))
    assert metrics.best_constant_caption(reordered, use_java=False) == best
    assert best in {caption for refs in metrics.tokenize_captions(train, use_java=False).values() for caption in refs}

    rng = random.Random(123)
    random_captions = [rng.choice(train[rng.choice(list(train))]) for _ in range(5)]

    def cider(caption: str, references: dict[int, list[str]]) -> float:
        return metrics.constant_caption_scores(caption, references, metrics="CIDEr", use_java=False)["CIDEr"]

    assert all(cider(best, train) > cider(caption, train) for caption in random_captions)
    # On images it never saw, it still beats a random training caption on average.
    assert cider(best, val) > sum(cider(caption, val) for caption in random_captions) / len(random_captions)


def test_constant_cider_shortcut_equals_pycocoevalcap_cider():
    tokenized = metrics.tokenize_captions(REFERENCES, use_java=False)
    for caption in ("a dog running on a red sofa", ""):
        expected = metrics.constant_caption_scores(caption, REFERENCES, metrics="CIDEr", use_java=False)["CIDEr"]
        assert metrics._constant_cider([caption], tokenized) == [pytest.approx(expected, abs=1e-12)]


def test_corpus_cider_is_pycocoevalcaps_cider_when_the_corpus_is_the_scored_set():
    from pycocoevalcap.cider.cider import Cider
    references = {1: ["a red circle on a white background", "a small red circle", "there is a red circle"],
                  2: ["a blue square and a green star", "two shapes on a gray background", "a blue square"],
                  3: ["a black cross at the top", "the black cross is at the top of the image", "one black cross"]}
    candidates = {1: "a red circle on a gray background", 2: "a blue square and a red star", 3: "a black cross"}
    _, expected = Cider().compute_score({i: refs for i, refs in references.items()},
                                        {i: [caption] for i, caption in candidates.items()})
    reward = metrics.CorpusCider(references.values())
    got = [reward.score(candidates[i], references[i]) for i in sorted(references)]
    assert got == pytest.approx(list(expected), rel=1e-9)
    assert reward.score(references[1][0], references[1]) > reward.score("a blue square", references[1])
    assert reward.score("", references[1]) == 0.0


@needs_java
def test_ctrl_c_during_meteor_scoring_does_not_hang_the_exit():
    # Ctrl-C lands while pycocoevalcap's Meteor holds its lock; the process must still end at once.
    script = """
from captioning import metrics
from pycocoevalcap.meteor.meteor import Meteor
def interrupted(self, hypothesis, references):
    raise KeyboardInterrupt
Meteor._stat = interrupted
try:
    metrics._meteor({1: ["a red square"]}, {1: ["a red square"]})
except KeyboardInterrupt:
    print("interrupted")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "interrupted"


def test_bad_endings_are_the_captions_that_stop_on_an_article_a_preposition_or_a_conjunction():
    captions = ["there are two red circles on a", "a dog riding a horse on the.", "a cat and", "A man on a HORSE .",
                "a red circle on grass", "two of them", ""]
    assert metrics.bad_endings(captions) == pytest.approx(3 / 7)
    assert metrics.bad_endings([]) == 0
