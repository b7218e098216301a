"""Tests for vocabulary.py: tokenizer parity with nltk.word_tokenize, building, encoding, safe loading."""

import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from vocabulary import UnsafePickleError, Vocabulary, build_vocabulary, get_vocabulary, tokenize

# (caption, tokens nltk.word_tokenize(caption.lower()) gives), written out from its documented rules:
# punkt splits sentences (not after known abbreviations), then each sentence's final period, commas,
# ;:!? and brackets are split off, " becomes `` or '', and clitics split as do|n't, dog|'s.
COCO_CAPTIONS = [
    ("A man riding a wave on top of a surfboard.",
     ["a", "man", "riding", "a", "wave", "on", "top", "of", "a", "surfboard", "."]),
    ("A giraffe standing next to a tree. It is eating leaves.",  # a period between two sentences
     ["a", "giraffe", "standing", "next", "to", "a", "tree", ".", "it", "is", "eating", "leaves", "."]),
    ("A cat sits on a couch. A dog sleeps on the floor. A bird watches.",
     ["a", "cat", "sits", "on", "a", "couch", ".", "a", "dog", "sleeps", "on", "the", "floor", ".",
      "a", "bird", "watches", "."]),
    ("A plate with broccoli, rice, and chicken on it.",
     ["a", "plate", "with", "broccoli", ",", "rice", ",", "and", "chicken", "on", "it", "."]),
    ("A dog's head resting on its owner's lap.",
     ["a", "dog", "'s", "head", "resting", "on", "its", "owner", "'s", "lap", "."]),
    ("The cat doesn't want to get off the laptop",  # no trailing period
     ["the", "cat", "does", "n't", "want", "to", "get", "off", "the", "laptop"]),
    ("Children can't wait to open their presents; they're excited.",
     ["children", "ca", "n't", "wait", "to", "open", "their", "presents", ";", "they", "'re", "excited", "."]),
    ('A stop sign that says "STOP" in red letters.',
     ["a", "stop", "sign", "that", "says", "``", "stop", "''", "in", "red", "letters", "."]),
    ('"Welcome home" is written on a cake.',
     ["``", "welcome", "home", "''", "is", "written", "on", "a", "cake", "."]),
    ("A sign reading 'No Parking' on a pole.",
     ["a", "sign", "reading", "'", "no", "parking", "'", "on", "a", "pole", "."]),
    ("A double-decker bus parked on a street.",
     ["a", "double-decker", "bus", "parked", "on", "a", "street", "."]),
    ("Two 12-year-old boys playing frisbee at 3.30 pm.",
     ["two", "12-year-old", "boys", "playing", "frisbee", "at", "3.30", "pm", "."]),
    ("There are 3.5 pizzas on the table. Nobody is eating them.",  # a decimal point is no sentence end
     ["there", "are", "3.5", "pizzas", "on", "the", "table", ".", "nobody", "is", "eating", "them", "."]),
    ("Mr. Smith stands near a train on St. James street.",  # abbreviations punkt knows
     ["mr.", "smith", "stands", "near", "a", "train", "on", "st.", "james", "street", "."]),
    ("A vintage car made in the U.S. sits in a garage.",
     ["a", "vintage", "car", "made", "in", "the", "u.s.", "sits", "in", "a", "garage", "."]),
    ("A bus stop on Elm St.",  # the text's final period is split off even after an abbreviation
     ["a", "bus", "stop", "on", "elm", "st", "."]),
    ("The dog wears a hat, e.g. a party hat.",  # punkt's English model does not know "e.g"
     ["the", "dog", "wears", "a", "hat", ",", "e.g", ".", "a", "party", "hat", "."]),
    ("The letter A. A dog walks by.",  # a single letter before a lower-case word reads as an initial
     ["the", "letter", "a.", "a", "dog", "walks", "by", "."]),
    ("  A   kitchen   with  a stove \n and a\tsink.  ",
     ["a", "kitchen", "with", "a", "stove", "and", "a", "sink", "."]),
    ("A BLACK AND WHITE PHOTO OF A CITY STREET",
     ["a", "black", "and", "white", "photo", "of", "a", "city", "street"]),
    ("A woman holding 2 umbrellas while it's raining!",
     ["a", "woman", "holding", "2", "umbrellas", "while", "it", "'s", "raining", "!"]),
    ("A man in a suit (and tie) talks on his cell phone...",
     ["a", "man", "in", "a", "suit", "(", "and", "tie", ")", "talks", "on", "his", "cell", "phone", "..."]),
]

# Examples from nltk's own doctests (nltk/test/tokenize.doctest), which ran word_tokenize with punkt.
NLTK_DOCTESTS = [
    ("I called Dr. Jones. I called Dr. Jones.",
     ["I", "called", "Dr.", "Jones", ".", "I", "called", "Dr.", "Jones", "."]),
    ("There were 300,000, but that wasn't enough.",
     ["There", "were", "300,000", ",", "but", "that", "was", "n't", "enough", "."]),
    ("Well, we couldn't have this predictable, cliche-ridden, \"Touched by an Angel\" (a show creator "
     "John Masius worked on) wanna-be if she didn't.",
     ["Well", ",", "we", "could", "n't", "have", "this", "predictable", ",", "cliche-ridden", ",", "``",
      "Touched", "by", "an", "Angel", "''", "(", "a", "show", "creator", "John", "Masius", "worked", "on",
      ")", "wanna-be", "if", "she", "did", "n't", "."]),
    ("It's more'n enough.", ["It", "'s", "more", "'n", "enough", "."]),
    ("He arrived at 3:00 pm.", ["He", "arrived", "at", "3:00", "pm", "."]),
]


@pytest.mark.parametrize("caption, expected", COCO_CAPTIONS, ids=[c for c, _ in COCO_CAPTIONS])
def test_tokenize_matches_word_tokenize_on_captions(caption, expected):
    assert tokenize(caption) == expected


@pytest.mark.parametrize("text, expected", NLTK_DOCTESTS)
def test_tokenize_matches_nltk_doctests(text, expected):
    assert tokenize(text) == [token.lower() for token in expected]


CAPTIONS = [
    "A red circle above a blue square.",
    "A blue square below a red circle.",
    "A red triangle left of a green circle.",
    "A green square.",
]
# Token counts: a 7, . 4, red 3, circle 3, blue 2, square 3, green 2, and a single
# above, below, triangle, left, of.


def test_build_vocabulary_respects_threshold_and_order():
    vocab = build_vocabulary(CAPTIONS, threshold=2)
    assert [vocab.idx2word[i] for i in range(4)] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (vocab.pad_index, vocab.start_index, vocab.end_index, vocab.unk_index) == (0, 1, 2, 3)
    # by descending count, ties alphabetical
    assert [vocab.idx2word[i] for i in range(4, len(vocab))] == [
        "a", ".", "circle", "red", "square", "blue", "green"]
    assert "above" not in vocab and "triangle" not in vocab
    assert vocab.threshold == 2
    assert all(vocab.word2idx[word] == index for index, word in vocab.idx2word.items())


def test_build_vocabulary_is_deterministic():
    shuffled = CAPTIONS[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != CAPTIONS
    assert build_vocabulary(shuffled, 1).word2idx == build_vocabulary(CAPTIONS, 1).word2idx


def test_build_vocabulary_rejects_threshold_below_one():
    with pytest.raises(ValueError, match="threshold"):
        build_vocabulary(CAPTIONS, threshold=0)


def test_encode_decode_clean_sentence_round_trip():
    vocab = build_vocabulary(CAPTIONS, threshold=1)
    caption = "A red circle above a blue square."
    ids = vocab.encode(caption)
    assert ids[0] == vocab.start_index and ids[-1] == vocab.end_index
    assert ids[1:-1] == [vocab.word2idx[word] for word in tokenize(caption)]
    assert vocab.decode(ids) == tokenize(caption)
    assert vocab.clean_sentence(ids) == "a red circle above a blue square"
    # a padded 1-D tensor, as a sampler returns it: stops at the first <end>
    padded = torch.tensor(ids + [vocab.word2idx["green"], vocab.pad_index, vocab.pad_index])
    assert vocab.decode(padded) == tokenize(caption)
    assert vocab.clean_sentence(padded) == "a red circle above a blue square"


def test_decode_skips_start_and_pad_and_clean_sentence_drops_trailing_punctuation():
    vocab = build_vocabulary(CAPTIONS, threshold=1)
    ids = [vocab.start_index, vocab("a"), vocab.pad_index, vocab("square"), vocab("."), vocab("."),
           vocab.end_index, vocab("red")]
    assert vocab.decode(ids) == ["a", "square", ".", "."]
    assert vocab.clean_sentence(ids) == "a square"


def test_unknown_word_maps_to_unk():
    vocab = build_vocabulary(CAPTIONS, threshold=2)
    assert vocab("zebra") == vocab.unk_index == 3
    ids = vocab.encode("A zebra above a square")
    assert ids == [1, vocab("a"), 3, 3, vocab("a"), vocab("square"), 2]  # "above" is below threshold
    assert vocab.decode(ids) == ["a", "<unk>", "<unk>", "a", "square"]
    assert vocab.clean_sentence(ids) == "a a square"


def test_add_word_is_idempotent():
    vocab = Vocabulary()
    assert len(vocab) == 4
    vocab.add_word("dog")
    vocab.add_word("dog")
    assert len(vocab) == 5 and vocab("dog") == 4 and "dog" in vocab and "cat" not in vocab


def _only_plain_values(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_values(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain_values(v) for v in value)
    return type(value) in (str, int)


def test_to_dict_from_dict_round_trip():
    vocab = build_vocabulary(CAPTIONS, threshold=2)
    data = vocab.to_dict()
    assert _only_plain_values(data)
    restored = Vocabulary.from_dict(data)
    assert restored == vocab and restored.idx2word == vocab.idx2word and restored.threshold == 2
    assert restored != build_vocabulary(CAPTIONS, threshold=1)


@pytest.mark.parametrize("data", [
    [1, 2], {"threshold": 1}, {"words": ["a", "b"], "threshold": 1},
    {"words": ["<pad>", "<start>", "<end>", "<unk>", "a", "a"], "threshold": 1},
    {"words": ["<pad>", "<start>", "<end>", "<unk>", 5], "threshold": 1},
])
def test_from_dict_rejects_malformed_data(data):
    with pytest.raises(ValueError):
        Vocabulary.from_dict(data)


def test_save_load_round_trip(tmp_path):
    vocab = build_vocabulary(CAPTIONS, threshold=2)
    path = tmp_path / "sub" / "vocab.pkl"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    assert Vocabulary.load(str(path)).threshold == 2
    with open(path, "rb") as file:
        assert pickle.load(file) == vocab.to_dict()  # plain data, loadable without this module
    assert os.listdir(path.parent) == ["vocab.pkl"]  # no temporary file left behind


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "vocab.pkl"
    old = build_vocabulary(CAPTIONS, threshold=2)
    old.save(path)

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        build_vocabulary(CAPTIONS, threshold=1).save(path)
    monkeypatch.undo()
    assert Vocabulary.load(path) == old
    assert os.listdir(tmp_path) == ["vocab.pkl"]


class _RunsAShellCommand:
    """Pickles to a call of os.system, as a hostile vocabulary file would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("wrap", [lambda payload: payload,
                                  lambda payload: {"words": ["<pad>", payload], "threshold": 1}])
def test_load_refuses_malicious_pickle(tmp_path, wrap):
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(wrap(_RunsAShellCommand(f"echo pwned > {marker}")))
    # control: an ordinary unpickler really would run the command
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "vocab.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="refusing to load") as error:
        Vocabulary.load(path)
    assert str(path) in str(error.value) and "system" in str(error.value)
    assert isinstance(error.value, pickle.UnpicklingError)
    assert not marker.exists()


@pytest.mark.parametrize("content", [pickle.dumps([1, 2, 3]), pickle.dumps({"threshold": 5}), b"not a pickle"])
def test_load_refuses_non_vocabulary_file(tmp_path, content):
    path = tmp_path / "vocab.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a vocabulary file") as error:
        Vocabulary.load(path)
    assert str(path) in str(error.value)


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing" / "vocab.pkl"
    with pytest.raises(FileNotFoundError) as error:
        Vocabulary.load(path)
    assert str(path) in str(error.value)


def _write_coco_captions(path, captions):
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(len(captions))]
    annotations = [{"id": 10 + i, "image_id": i, "caption": caption} for i, caption in enumerate(captions)]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_from_annotations_reads_coco_caption_files(tmp_path):
    first = _write_coco_captions(tmp_path / "annotations" / "captions_train.json", CAPTIONS[:2])
    second = _write_coco_captions(tmp_path / "annotations" / "captions_val.json", CAPTIONS[2:])
    assert Vocabulary.from_annotations([first, second], threshold=2) == build_vocabulary(CAPTIONS, 2)
    assert Vocabulary.from_annotations(str(first), threshold=1) == build_vocabulary(CAPTIONS[:2], 1)


def test_from_annotations_errors_name_the_file(tmp_path):
    missing = tmp_path / "annotations" / "captions_train.json"
    with pytest.raises(FileNotFoundError) as error:
        Vocabulary.from_annotations([missing], threshold=1)
    assert str(missing) in str(error.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": []}')
    with pytest.raises(ValueError) as error:
        Vocabulary.from_annotations([broken], threshold=1)
    assert str(broken) in str(error.value)


def test_get_vocabulary_builds_saves_and_loads(tmp_path):
    annotations = _write_coco_captions(tmp_path / "captions_train.json", CAPTIONS)
    vocab_file = tmp_path / "vocab.pkl"
    built = get_vocabulary(vocab_file, 2, [annotations], from_file=True)  # no file yet: built and saved
    assert built == build_vocabulary(CAPTIONS, 2) and Vocabulary.load(vocab_file) == built

    # from_file loads without needing the annotations
    assert get_vocabulary(vocab_file, 2, [tmp_path / "gone.json"], from_file=True) == built
    with pytest.warns(UserWarning, match="threshold 2"):
        assert get_vocabulary(vocab_file, 1, [tmp_path / "gone.json"], from_file=True) == built

    rebuilt = get_vocabulary(vocab_file, 1, [annotations], from_file=False)
    assert rebuilt == build_vocabulary(CAPTIONS, 1) != built
    assert Vocabulary.load(vocab_file) == rebuilt


def test_saved_files_follow_the_umask_and_leave_no_temp_file(tmp_path):
    from captioning.checkpoint import save_checkpoint
    from captioning.files import write_json_atomic
    previous = os.umask(0o022)  # a shared folder's usual umask: readable by colleagues
    try:
        build_vocabulary(["a red square"], 1).save(tmp_path / "vocab.pkl")
        write_json_atomic(tmp_path / "results.json", [])
        save_checkpoint(tmp_path / "last.pt", {"weights": torch.zeros(2)})
    finally:
        os.umask(previous)
    assert {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {
        "vocab.pkl": 0o644, "results.json": 0o644, "last.pt": 0o644}


def test_a_threshold_that_leaves_the_captions_mostly_unknown_is_refused():
    captions = ["a red square", "a blue circle", "a red circle"]
    assert len(build_vocabulary(captions, 2)) > 4  # "a", "red", "circle": two thirds of the words
    with pytest.raises(ValueError, match="vocab_threshold 4 keeps 0 words, which cover 0%"):
        build_vocabulary(captions, 4)


def test_a_saved_vocabulary_built_from_other_captions_is_refused(tmp_path):
    def annotations(name: str, captions: list[str]) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg"}],
                                    "annotations": [{"id": i, "image_id": 1, "caption": caption}
                                                    for i, caption in enumerate(captions)]}))
        return path
    shapes = annotations("shapes.json", ["a red square", "a blue circle", "a red circle"])
    animals = annotations("animals.json", ["a brown dog", "a black cat", "a brown cat"])
    vocab_file = tmp_path / "vocab.pkl"
    built = get_vocabulary(vocab_file, 1, [shapes], from_file=False)
    assert get_vocabulary(vocab_file, 1, [shapes], from_file=True) == built  # the same captions: reused
    with pytest.raises(ValueError, match="built from other captions .* vocab_from_file false"):
        get_vocabulary(vocab_file, 1, [animals], from_file=True)
    assert get_vocabulary(vocab_file, 1, [animals], from_file=False).source != built.source  # asked: rebuilt


def test_a_vocabulary_built_at_another_threshold_is_used_with_a_warning_naming_the_setting(tmp_path):
    """U11: the warning names the setting and its flag, not the function's argument."""
    annotations = tmp_path / "captions.json"
    annotations.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": '
                           '[{"id": 1, "image_id": 1, "caption": "a red circle"}]}')
    vocab_file = tmp_path / "vocab.pkl"
    get_vocabulary(vocab_file, 1, [annotations], from_file=True)
    with pytest.warns(UserWarning, match="vocab_threshold 1, not 3.*--vocab-from-file false"):
        vocabulary = get_vocabulary(vocab_file, 3, [annotations], from_file=True)
    assert vocabulary.threshold == 1
