"""Vocabulary: captions -> tokens -> ids and back; saved as a restricted pickle."""

import contextlib
import hashlib
import json
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from nltk.tokenize.destructive import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
from pycocotools.coco import COCO

from captioning.annotations import load_coco
from captioning.files import atomic_write, check_file, write_json_atomic
from captioning.progress import progress

TOKEN_CACHE_VERSION = 1  # bump when tokenize() changes, so cached tokens are rebuilt

PathLike = str | os.PathLike

# nltk.word_tokenize = punkt sentence split + NLTKWordTokenizer per sentence. Punkt's English
# model is data we may not download, so we run punkt's own algorithm with these parameters:
# the entries of the model's abbrev_types that can plausibly occur in captions. The model has
# no "etc", "e.g" or "i.e", but does have state names such as "ill", "wash" and "ok".
# Lower-cased text leaves no orthographic evidence, so the empty ortho_context reproduces the
# model's decisions: no break after a known abbreviation, nor after a single letter or number
# followed by a lower-case word ("the letter a. a dog" keeps "a.").
_CAPTION_ABBREVIATIONS = """
    mr mrs ms dr prof jr sr messrs gen col lt maj adm sen rep reps
    st ave u.s u.s.a u.k u.n u.s.s.r d.c n.y l.a calif fla wash mich ariz conn ill ok
    co corp inc ltd bros ft mg yr vs ph.d a.m p.m
    jan feb aug sep sept oct nov dec tues wed fri
""".split()


def _sentence_splitter() -> PunktSentenceTokenizer:
    """A punkt sentence splitter that needs no downloaded model."""
    parameters = PunktParameters()
    parameters.abbrev_types = set(_CAPTION_ABBREVIATIONS)
    return PunktSentenceTokenizer(parameters)


_SENTENCE_SPLITTER = _sentence_splitter()
_WORD_TOKENIZER = NLTKWordTokenizer()


def tokenize(caption: str) -> list[str]:
    """Split a caption into the tokens nltk.word_tokenize(caption.lower()) gives."""
    sentences = _SENTENCE_SPLITTER.tokenize(caption.lower())
    return [token for sentence in sentences for token in _WORD_TOKENIZER.tokenize(sentence)]


def is_punctuation(token: str) -> bool:
    return not any(character.isalnum() for character in token)


class UnsafePickleError(pickle.UnpicklingError):
    """A vocabulary file referenced a Python global, which could run arbitrary code."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that loads only plain containers, strings and numbers."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        # Every callable a pickle can invoke is looked up here; refusing all of them
        # leaves only data opcodes (dict, list, str, int, ...), so loading runs no code.
        raise UnsafePickleError(
            f"refusing to load {self.path}: it references {module}.{name}; "
            "a vocabulary file holds only plain data"
        )


class Vocabulary:
    """A word <-> index mapping with <pad>, <start>, <end>, <unk> at indices 0..3."""

    PAD = "<pad>"
    START = "<start>"
    END = "<end>"
    UNK = "<unk>"
    SPECIAL_TOKENS = (PAD, START, END, UNK)

    def __init__(self, threshold: int = 1, source: str = ""):
        self.threshold = threshold
        self.source = source  # captions_fingerprint of the captions it was built from ("" = not recorded)
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        for token in self.SPECIAL_TOKENS:
            self.add_word(token)

    def add_word(self, word: str) -> None:
        """Give word the next free index unless it already has one."""
        if word not in self.word2idx:
            self.word2idx[word] = len(self.word2idx)
            self.idx2word[self.word2idx[word]] = word

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.unk_index)

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.word2idx == other.word2idx

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, threshold={self.threshold})"

    @property
    def pad_index(self) -> int:
        return self.word2idx[self.PAD]

    @property
    def start_index(self) -> int:
        return self.word2idx[self.START]

    @property
    def end_index(self) -> int:
        return self.word2idx[self.END]

    @property
    def unk_index(self) -> int:
        return self.word2idx[self.UNK]

    def encode(self, caption: str) -> list[int]:
        """Tokenize a caption into ids wrapped in <start> ... <end>."""
        return [self.start_index, *(self(token) for token in tokenize(caption)), self.end_index]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids (a list or 1-D tensor) to words, skipping <start>/<pad>, up to the first <end>."""
        if hasattr(ids, "tolist"):  # a tensor or numpy array
            ids = ids.tolist()
        words = []
        for index in ids:
            if index == self.end_index:
                break
            if index not in (self.start_index, self.pad_index):
                words.append(self.idx2word[index])
        return words

    def clean_sentence(self, ids: Iterable[int]) -> str:
        """Decode ids into a readable caption: no special tokens, no trailing punctuation."""
        words = [word for word in self.decode(ids) if word != self.UNK]
        while words and is_punctuation(words[-1]):
            words.pop()
        return " ".join(words)

    def to_dict(self) -> dict:
        """Plain-data form for checkpoints: the words in index order and the threshold."""
        return {"words": [self.idx2word[index] for index in range(len(self))], "threshold": self.threshold,
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        """Rebuild a vocabulary from to_dict()'s output."""
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError("a vocabulary dict needs a 'words' list")
        words, threshold = data["words"], data.get("threshold")
        if not isinstance(threshold, int) or not all(isinstance(word, str) for word in words):
            raise ValueError("a vocabulary dict needs string words and an integer 'threshold'")
        if tuple(words[: len(cls.SPECIAL_TOKENS)]) != cls.SPECIAL_TOKENS or len(set(words)) != len(words):
            raise ValueError(f"a vocabulary's words must be unique and start with {cls.SPECIAL_TOKENS}")
        source = data.get("source", "")  # vocabularies saved before it was recorded have none
        if not isinstance(source, str):
            raise ValueError("a vocabulary dict's 'source' must be a string")
        vocabulary = cls(threshold, source)
        for word in words:
            vocabulary.add_word(word)
        return vocabulary

    @classmethod
    def from_annotations(cls, annotation_files: Sequence[PathLike], threshold: int) -> "Vocabulary":
        """Build a vocabulary from the captions in COCO caption JSON files."""
        if isinstance(annotation_files, (str, os.PathLike)):
            annotation_files = [annotation_files]
        captions, token_lists = [], []
        for path in map(Path, annotation_files):
            coco = load_coco(path)
            tokens = tokenized_captions(coco, path, token_cache_dir(path))  # the loader will find them cached
            for annotation in coco.dataset.get("annotations", []):
                captions.append(annotation["caption"])
                token_lists.append(tokens[annotation["id"]])
        vocabulary = vocabulary_from_tokens(token_lists, threshold)
        vocabulary.source = captions_fingerprint(captions)
        return vocabulary

    def save(self, path: PathLike) -> None:
        """Pickle to_dict() to path atomically, so a crash never leaves a half-written file."""
        with atomic_write(path) as file:
            pickle.dump(self.to_dict(), file)

    @classmethod
    def load(cls, path: PathLike) -> "Vocabulary":
        """Load a vocabulary saved by save(), refusing pickles that reference any Python global."""
        path = check_file(path, "vocabulary file")
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} does not exist; build it from the annotations first")
        with open(path, "rb") as file:
            try:
                data = _PlainDataUnpickler(file, path).load()
            except UnsafePickleError:
                raise
            except Exception as error:  # any other failure to parse means this is not a vocabulary pickle
                raise ValueError(f"{path} is not a vocabulary file: {error}") from error
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path} is not a vocabulary file: {error}") from None


def _read_captions(path: Path) -> list[str]:
    """All caption strings of one COCO caption JSON file, in file order."""
    return [annotation["caption"] for annotation in load_coco(path).dataset.get("annotations", [])]


def tokenized_captions(coco: COCO, path: Path, cache_dir: Path | None) -> dict[int, list[str]]:
    """Tokens of every caption by annotation id, tokenized once and cached as JSON in cache_dir (None: no cache).

    The vocabulary and the loader both read captions as tokens: the second one finds them cached.
    """
    stat = path.stat()
    key = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": TOKEN_CACHE_VERSION}
    cache_file = cache_dir / f"tokens_{path.stem}.json" if cache_dir else None
    if cache_file and cache_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                return {int(ann_id): tokens for ann_id, tokens in cached["tokens"].items()}
    annotations = progress(coco.anns.items(), desc="tokenizing captions", summary=False)
    tokens = {ann_id: tokenize(ann["caption"]) for ann_id, ann in annotations}
    if cache_file:
        try:
            write_json_atomic(cache_file, {"key": key, "tokens": tokens})
        except OSError as error:  # a read-only data folder only costs the speed-up
            warnings.warn(f"could not write the token cache {cache_file}: {error}")
    return tokens


def token_cache_dir(annotation_file: Path) -> Path | None:
    """Where a split's tokens are cached: <data_dir>/cache for <data_dir>/annotations/captions_<split>.json; a
    file anywhere else gets no cache (nothing is written beside a file of unknown layout)."""
    return annotation_file.parent.parent / "cache" if annotation_file.parent.name == "annotations" else None


def captions_fingerprint(captions: Sequence[str]) -> str:
    """A short digest of a list of captions: tells whether a saved vocabulary was built from these captions."""
    return hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()[:16]


def build_vocabulary(captions: Iterable[str], threshold: int) -> Vocabulary:
    """Keep the words seen at least threshold times, most frequent first, ties alphabetical."""
    return vocabulary_from_tokens((tokenize(caption) for caption in captions), threshold)


def vocabulary_from_tokens(token_lists: Iterable[Sequence[str]], threshold: int) -> Vocabulary:
    """build_vocabulary from captions already tokenized."""
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    counts = Counter(token for tokens in token_lists for token in tokens)
    vocabulary = Vocabulary(threshold)
    for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if count >= threshold:
            vocabulary.add_word(word)
    total = sum(counts.values())
    kept = sum(count for count in counts.values() if count >= threshold)
    if total and kept < total / 2:  # most words of most captions would be <unk>: a model could say nothing
        raise ValueError(f"vocab_threshold {threshold} keeps {len(vocabulary) - len(Vocabulary.SPECIAL_TOKENS)} words, which "
                         f"cover {kept / total:.0%} of the training captions' words (the most frequent word occurs "
                         f"{max(counts.values())} times): lower the threshold")
    return vocabulary


def get_vocabulary(
    vocab_file: PathLike, threshold: int, annotation_files: Sequence[PathLike], from_file: bool
) -> Vocabulary:
    """Load vocab_file if from_file and it exists; otherwise build from annotation_files and save it."""
    if from_file and check_file(vocab_file, "vocabulary file").is_file():
        vocabulary = Vocabulary.load(vocab_file)
        present = all(Path(path).is_file() for path in annotation_files)  # else there is nothing to compare
        captions = [caption for path in annotation_files for caption in _read_captions(Path(path))] if present else []
        if present and vocabulary.source and vocabulary.source != captions_fingerprint(captions):
            raise ValueError(f"{vocab_file} was built from other captions than those of "
                             f"{', '.join(map(str, annotation_files))}, whose words it would turn into <unk>: "
                             f"delete it, rebuild it with vocab_from_file false (--vocab-from-file false), or give "
                             f"another vocab_file")
        if vocabulary.threshold != threshold:
            warnings.warn(
                f"{vocab_file} was built with vocab_threshold {vocabulary.threshold}, not {threshold}: it is used as "
                f"it is; to rebuild it, set vocab_from_file false (--vocab-from-file false)",
                stacklevel=2,
            )
        return vocabulary
    vocabulary = Vocabulary.from_annotations(annotation_files, threshold)
    vocabulary.save(vocab_file)
    return vocabulary
