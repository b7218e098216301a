"""Caption metrics: the standard COCO caption scores via pycocoevalcap, and the image-blind baseline.

Scores come from pycocoevalcap's own scorers (Bleu(4), Meteor(), Rouge(), Cider() after PTBTokenizer), composed
as its COCOEvalCap.evaluate() does, minus SPICE (which needs a separate Stanford CoreNLP download):

    scores = score_captions(references, candidates)            # {"Bleu_1": ..., "METEOR": ..., "CIDEr": ...}
    scores, per_image = score_captions(references, candidates, per_image=True)
    worst = sorted(per_image["CIDEr"].items(), key=lambda item: item[1])[:5]

The PTB tokenizer and METEOR run on Java. Without Java, METEOR is left out of the results and captions are
tokenized by a pure-Python equivalent of what the PTB tokenizer does to COCO captions (see tokenize_captions).

CIDEr computes its IDF from the references of the images being scored, as the standard does: a score depends on
which images are in the set, and a set of one image always scores CIDEr 0.
"""
import functools
import os
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test, precook
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
# Cheap enough for every validation epoch: METEOR's JVM alone takes seconds to start.
FAST_METRICS = ("BLEU", "CIDEr")
# Result keys per metric, spelled as COCOEvalCap spells them.
METRIC_KEYS = {
    "BLEU": ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"),
    "METEOR": ("METEOR",),
    "ROUGE_L": ("ROUGE_L",),
    "CIDEr": ("CIDEr",),
}
JAVA_MISSING_MESSAGE = "Java not found: METEOR skipped, captions tokenized in Python instead of the PTB tokenizer"


@functools.cache
def java_available() -> bool:
    """Whether a working `java` is on PATH (the PTB tokenizer and METEOR need it); checked once per process."""
    java = shutil.which("java")
    if java is None:
        return False
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def _warn_java_missing() -> None:
    """Warn, once per process, that scores are computed without Java."""
    warnings.warn(JAVA_MISSING_MESSAGE, RuntimeWarning, stacklevel=4)


def _resolve_use_java(use_java: bool | None) -> bool:
    """Turn the use_java argument (None = use Java when it works) into a decision."""
    if use_java is None:
        if java_available():
            return True
        _warn_java_missing()
        return False
    if use_java and not java_available():
        raise RuntimeError("use_java=True but no working `java` is on PATH: "
                           "install a Java runtime or pass use_java=None.")
    return bool(use_java)


# --- Tokenization -------------------------------------------------------------------------------------------------

# Stanford's PTBTokenizer (-lowerCase) turns brackets into these lower-cased escapes; they are not in PUNCTUATIONS,
# so COCO evaluation keeps them as words. Double quotes become `` or '', which are dropped.
_ESCAPES = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-", '"': "''"}
# The PTB tokenizer maps these Unicode marks to their ASCII forms (then dropped as punctuation).
_UNICODE_PUNCTUATION = str.maketrans({
    "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2026": " ... ", "\u2014": " -- ", "\u2013": " -- ",
})
# Split off wherever they occur, even inside a word.
_ALWAYS_SPLIT = re.compile(r'\.\.\.|--|[()\[\]{}"`%$#+=*]')
# Commas, semicolons and colons split except between digits (1,000 and 10:30 stay whole).
_CLAUSE_PUNCTUATION = re.compile(r"(?<!\d)[,;:]|[,;:](?!\d)")
# Words whose final period the PTB tokenizer keeps (those of its abbreviation list that captions use).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt jr sr vs etc inc co corp ltd ft ave jan feb aug sept oct nov dec".split())
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")  # u.s.  i.e.  a.
_CONTRACTION = re.compile(r"(?:n't|'s|'re|'ve|'d|'ll|'m)$")
_TRAILING_MARKS = re.compile(r"(?<=[^?!])[?!]+$|(?<=.)['/]$")  # a dog?!  dogs'  w/ (but !! alone is a word)
_NON_WORD = re.compile(r"[^\w']+")  # for counting duplicate captions cheaply, not for scoring
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "lemme": "lem me", "gimme": "gim me",
                "wanna": "wan na"}


def _split_chunk(chunk: str) -> list[str]:
    """PTB-split one lower-cased, whitespace-free piece of a caption into tokens."""
    leading, trailing = [], []
    while len(chunk) > 1 and not _CONTRACTION.fullmatch(chunk):
        marks = _TRAILING_MARKS.search(chunk)
        if chunk[0] == "'" and not chunk[1].isdigit():  # an opening quote, but '90s is a word
            leading.append("'")
            chunk = chunk[1:]
        elif marks:
            trailing.insert(0, marks.group())
            chunk = chunk[:marks.start()]
        elif chunk[-1] == "." and not (_INITIALS.fullmatch(chunk) or chunk[:-1] in _ABBREVIATIONS):
            trailing.insert(0, ".")
            chunk = chunk[:-1]
        else:
            break
    suffixes = []
    while (contraction := _CONTRACTION.search(chunk)) and contraction.start() > 0:  # we'd've -> we 'd 've
        suffixes.insert(0, contraction.group())
        chunk = chunk[:contraction.start()]
    words = _SPLIT_WORDS.get(chunk, chunk).split()
    return leading + words + suffixes + trailing


def _python_ptb_tokenize(caption: str) -> str:
    """Tokenize one caption as PTBTokenizer does for COCO evaluation: lower-case, PTB tokens, punctuation dropped."""
    text = caption.lower().translate(_UNICODE_PUNCTUATION)
    text = _ALWAYS_SPLIT.sub(lambda match: f" {_ESCAPES.get(match.group(), match.group())} ", text)
    text = _CLAUSE_PUNCTUATION.sub(r" \g<0> ", text)
    tokens = [token for chunk in text.split() for token in _split_chunk(chunk)]
    return " ".join(token for token in tokens if token not in PUNCTUATIONS)


def tokenize_captions(captions: Mapping[Hashable, Sequence[str]], use_java: bool | None = None) -> dict:
    """Lower-case, PTB-tokenize and strip punctuation as COCO evaluation does: {key: [caption]} -> {key: [tokens]}.

    With Java this is pycocoevalcap's PTBTokenizer itself; without it (or with use_java=False) a pure-Python
    equivalent that agrees with it on ordinary captions (rare constructs such as "'tis" or "<b>" may differ).
    """
    use_java = _resolve_use_java(use_java)
    # The Java tokenizer reads one caption per line, so a newline (or \r, \u2028) inside a caption would shift every
    # later caption onto the wrong image; collapsing whitespace changes nothing else about the tokens.
    cleaned = {key: [" ".join(caption.split()) for caption in captions[key]] for key in captions}
    if not use_java:
        return {key: [_python_ptb_tokenize(caption) for caption in texts] for key, texts in cleaned.items()}
    tokenized = PTBTokenizer().tokenize({key: [{"caption": caption} for caption in texts]
                                         for key, texts in cleaned.items()})
    for key, texts in cleaned.items():
        if len(tokenized.setdefault(key, [])) != len(texts):
            raise RuntimeError(f"The PTB tokenizer returned {len(tokenized[key])} captions for {key!r} "
                               f"instead of {len(texts)}; rerun with use_java=False to tokenize in Python.")
    return tokenized


_TOKENIZER_DIR = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))  # holds Stanford's jar


def _sentences_file(delete: bool = False, dir: str | None = None):  # noqa: A002 -- tempfile's own signature
    """PTBTokenizer writes the sentences into its own package folder, which is read-only in many installs (a system
    Python, a container, a shared environment): they go to the system's temporary folder instead."""
    return tempfile.NamedTemporaryFile(delete=delete, prefix="ptb_sentences_")


class _QuietTokenizerProcess(subprocess.Popen):
    """PTBTokenizer's Java process, run with absolute paths (its jar, the sentences' file in the temporary folder),
    and whose stderr is passed on except its "PTBTokenizer tokenized N tokens at ..." line: pycocoevalcap lets Java
    print one on every call, that is after every validation epoch."""

    def __init__(self, args: list[str], **kwargs) -> None:
        args = [os.path.join(_TOKENIZER_DIR, arg) if arg.endswith(".jar") else arg for arg in args]
        args[-1] = os.path.join(tempfile.gettempdir(), args[-1])  # the sentences' file, named relative to cwd
        kwargs.pop("cwd", None)
        super().__init__(args, stderr=subprocess.PIPE, **kwargs)

    def communicate(self, *args, **kwargs):
        output, errors = super().communicate(*args, **kwargs)
        for line in (errors or b"").decode(errors="replace").splitlines():
            if not line.startswith("PTBTokenizer tokenized"):
                print(line, file=sys.stderr)
        return output, errors


# pycocoevalcap's tokenizer module alone sees these stand-ins for subprocess and tempfile.
ptbtokenizer.subprocess = types.SimpleNamespace(Popen=_QuietTokenizerProcess, PIPE=subprocess.PIPE)
ptbtokenizer.tempfile = types.SimpleNamespace(NamedTemporaryFile=_sentences_file)


# --- Scoring ------------------------------------------------------------------------------------------------------

def _check_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Canonical names of the requested metrics, in METRICS order."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    canonical = {name.upper(): name for name in METRICS}
    wanted = set()
    for name in metrics:
        if name.upper() not in canonical:
            raise ValueError(f"Unknown metric {name!r}: choose from {', '.join(METRICS)}.")
        wanted.add(canonical[name.upper()])
    if not wanted:
        raise ValueError(f"No metric requested: metrics is empty; choose from {', '.join(METRICS)}.")
    return [name for name in METRICS if name in wanted]


def _check_inputs(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]) -> list:
    """The image ids to score (those of candidates), after checking both mappings are well formed."""
    if not candidates:
        raise ValueError("No candidate captions to score: candidates is empty.")
    for image_id, caption in candidates.items():
        if not isinstance(caption, str):
            raise TypeError(f"Candidate caption for image id {image_id!r} must be a string, "
                            f"not {type(caption).__name__}.")
        if image_id not in references or len(references[image_id]) == 0:
            raise ValueError(f"No reference captions for candidate image id {image_id!r}: "
                             "every candidate needs references.")
        if isinstance(references[image_id], str) or not all(isinstance(ref, str) for ref in references[image_id]):
            raise TypeError(f"References for image id {image_id!r} must be a list of caption strings.")
    return list(candidates)


def _meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    """pycocoevalcap's METEOR; its JVM lives only for this call."""
    meteor = Meteor()
    try:
        return meteor.compute_score(gts, res)
    except ValueError as error:  # the JVM died and returned no score line
        raise RuntimeError("METEOR's Java process returned no score (it may have run out of memory: it asks for "
                           "up to 2 GB); leave METEOR out of metrics to skip it.") from error
    finally:
        _stop_meteor(meteor)


def _stop_meteor(meteor: Meteor) -> None:
    """End METEOR's JVM now. pycocoevalcap's Meteor.__del__ would, at exit, but it first waits for a lock that a call
    cut short by Ctrl-C still holds, and the process would hang there with a 2 GB Java child."""
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()
    meteor.lock = threading.Lock()  # free, for __del__, which then finds the JVM gone


def score_captions(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    metrics: str | Iterable[str] = METRICS,
    use_java: bool | None = None,
    per_image: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[Hashable, float]]]:
    """COCO caption scores (Bleu_1-4, METEOR, ROUGE_L, CIDEr) of candidates[image_id] against references[image_id].

    Only the images in candidates are scored. metrics picks a subset (FAST_METRICS for per-epoch validation);
    METEOR is absent from the result without Java. use_java: None = Java when available, False = Python
    tokenizer and no METEOR, True = Java or RuntimeError. per_image=True also returns
    {key: {image_id: score}} for every key, e.g. per_image["CIDEr"] to find the worst captions.
    An empty candidate caption is scored as an empty hypothesis (0 on every metric).
    """
    wanted = _check_metrics(metrics)
    image_ids = _check_inputs(references, candidates)
    use_java = _resolve_use_java(use_java)
    if not use_java:
        wanted = [name for name in wanted if name != "METEOR"]
    # Tokenize references and candidates together: one tokenizer JVM instead of two.
    tokenized = tokenize_captions({**{("reference", image_id): list(references[image_id]) for image_id in image_ids},
                                   **{("candidate", image_id): [candidates[image_id]] for image_id in image_ids}},
                                  use_java=use_java)
    gts = {image_id: tokenized[("reference", image_id)] for image_id in image_ids}
    res = {image_id: tokenized[("candidate", image_id)] for image_id in image_ids}

    scorers = {
        "BLEU": lambda: Bleu(4).compute_score(gts, res, verbose=0),
        "METEOR": lambda: _meteor(gts, res),
        "ROUGE_L": lambda: Rouge().compute_score(gts, res),
        "CIDEr": lambda: Cider().compute_score(gts, res),
    }
    scores, image_scores = {}, {}
    for name in wanted:
        corpus_score, per_image_score = scorers[name]()
        if name != "BLEU":  # BLEU alone returns one value (and one list) per n-gram order
            corpus_score, per_image_score = [corpus_score], [per_image_score]
        for key, value, values in zip(METRIC_KEYS[name], corpus_score, per_image_score):
            scores[key] = float(value)
            image_scores[key] = {image_id: float(v) for image_id, v in zip(image_ids, values)}
    return (scores, image_scores) if per_image else scores


def constant_caption_scores(
    caption: str,
    references: Mapping[Hashable, Sequence[str]],
    metrics: str | Iterable[str] = METRICS,
    use_java: bool | None = None,
) -> dict[str, float]:
    """score_captions with the same caption given to every image in references (the image-blind baseline)."""
    return score_captions(references, dict.fromkeys(references, caption), metrics=metrics, use_java=use_java)


# --- Image-blind baseline -----------------------------------------------------------------------------------------

def _constant_cider(captions: Sequence[str], tokenized_references: Mapping[Hashable, list[str]]) -> list[float]:
    """pycocoevalcap CIDEr of each tokenized caption given to every image, computing the references' IDF once.

    Drives one CiderScorer exactly as Cider.compute_score does (compute_doc_freq, compute_cider, mean), with
    Cider()'s defaults n=4, sigma=6, but swaps in each caption instead of rebuilding the scorer.
    """
    scorer = CiderScorer(n=4, sigma=6.0)
    for refs in tokenized_references.values():
        scorer += (None, refs)
    scorer.compute_doc_freq()
    scores = []
    for caption in captions:
        scorer.ctest = [cook_test(caption)] * len(scorer.crefs)
        scores.append(float(np.mean(scorer.compute_cider())))
    return scores


def _frequent_captions(train_references: Mapping[int, Sequence[str]], n_captions: int) -> list[str]:
    """The n_captions most frequent training captions, one original spelling each, ties broken alphabetically."""
    # A cheap normal form (lower case, punctuation as spaces) so counting stays fast on all of COCO's 600k captions;
    # only the winners go through the real tokenizer.
    counts, spelling = Counter(), {}
    for refs in train_references.values():
        for caption in refs:
            key = " ".join(_NON_WORD.sub(" ", caption.lower()).split())
            if key:
                counts[key] += 1
                spelling.setdefault(key, caption)
    return [spelling[key] for key in sorted(counts, key=lambda key: (-counts[key], key))[:n_captions]]


# How best_constant_caption searches: candidates, screening, final round (see its docstring).
CONSTANT_CANDIDATES = 50  # most frequent training captions
CONSTANT_CONSENSUS = 100  # captions of random training images
CONSTANT_SCREEN_IMAGES = 25
CONSTANT_FINALISTS = 5
CONSTANT_MAX_IMAGES = 1000


def best_constant_caption(train_references: Mapping[int, Sequence[str]], seed: int = 0,
                          use_java: bool | None = None) -> str:
    """The tokenized training caption that, given to every training image, scores the best CIDEr.

    Uses the training split only, deterministically for a given seed. Candidates: the 50 most frequent training
    captions plus 100 captions of random training images. Every candidate is scored as a constant caption with
    pycocoevalcap's CIDEr on 25 random training images that no consensus caption comes from (its mean CIDEr against
    other images' references); the 5 best are scored again on 1,000 random training images (a superset of the
    screening ones) and the best of those wins. The screening stage is
    what keeps this to a few seconds: one CIDEr pass over 1,000 images takes about 0.4 s.
    """
    image_ids = sorted(image_id for image_id, refs in train_references.items() if len(refs) > 0)
    if not image_ids:
        raise ValueError("No training references: train_references has no image with captions.")
    rng = random.Random(seed)
    evaluation_ids = rng.sample(image_ids, min(CONSTANT_MAX_IMAGES, len(image_ids)))
    screening_ids = evaluation_ids[:CONSTANT_SCREEN_IMAGES]  # rng.sample's order is already random
    screened = set(screening_ids)
    other_ids = [image_id for image_id in image_ids if image_id not in screened] or image_ids
    consensus = [rng.choice(list(train_references[image_id]))
                 for image_id in rng.sample(other_ids, min(CONSTANT_CONSENSUS, len(other_ids)))]

    # One tokenizer run for everything that gets scored.
    tokenized = tokenize_captions({("candidates",): _frequent_captions(train_references, CONSTANT_CANDIDATES) + consensus,
                                   **{image_id: list(train_references[image_id]) for image_id in evaluation_ids}},
                                  use_java=use_java)
    candidates = [caption for caption in dict.fromkeys(tokenized[("candidates",)]) if caption]
    if not candidates:
        raise ValueError("Every candidate training caption is empty after tokenization: no constant caption to choose.")

    screen_scores = _constant_cider(candidates, {image_id: tokenized[image_id] for image_id in screening_ids})
    ranking = sorted(range(len(candidates)), key=lambda index: -screen_scores[index])  # stable: ties keep list order
    finalists = [candidates[index] for index in ranking[:CONSTANT_FINALISTS]]
    if len(evaluation_ids) == len(screening_ids):  # nothing more to learn from a second pass
        return finalists[0]
    final_scores = _constant_cider(finalists, {image_id: tokenized[image_id] for image_id in evaluation_ids})
    return finalists[int(np.argmax(final_scores))]


# --- Captions cut off ------------------------------------------------------------------------------------------------

# Words no caption ends on: articles, prepositions that need their object, conjunctions ("... riding a horse on a").
DANGLING_WORDS = frozenset("a an the of on in at to with by from and or".split())


def bad_endings(captions: Iterable[str]) -> float:
    """The share of captions whose last word is one no caption ends on (DANGLING_WORDS), punctuation aside.

    The fault self-critical training is known for when its reward does not score the end of a caption (Rennie et al.
    2017, appendix E): CIDEr takes little from "... on a" for the background it leaves out. 0 for no captions.
    """
    last = [next((word for word in reversed(caption.lower().split()) if any(c.isalnum() for c in word)), "")
            for caption in captions]
    return sum(word.strip(".,;:!?") in DANGLING_WORDS for word in last) / max(len(last), 1)


# --- CIDEr as a training reward ------------------------------------------------------------------------------------

class CorpusCider:
    """pycocoevalcap's CIDEr of one caption against its references, with document frequencies fixed by a corpus.

    The same formula as Cider().compute_score (n-grams 1-4, tf-idf vectors, clipped cosine, a Gaussian length penalty
    with sigma 6, times 10), but the idf comes from the corpus given here (the training references) instead of from
    the set being scored: what self-critical training needs to score a batch of samples at a time. Captions are
    strings of space-separated tokens, scored as they are (no tokenizer).
    """

    def __init__(self, corpus: Iterable[Sequence[str]], n: int = 4, sigma: float = 6.0) -> None:
        self.n, self.sigma = n, sigma
        self.document_frequency: Counter = Counter()
        documents = 0
        for references in corpus:
            documents += 1
            self.document_frequency.update({ngram for reference in references for ngram in precook(reference, n)})
        if not documents:
            raise ValueError("CorpusCider needs at least one image's references")
        self.log_documents = math.log(documents)
        self._vectors: dict[str, tuple] = {}  # references recur from epoch to epoch

    def _vector(self, caption: str) -> tuple[list[dict], list[float], int]:
        """tf-idf weights per n-gram order, their norms, and the length pycocoevalcap uses (its bigram count)."""
        cached = self._vectors.get(caption)
        if cached is not None:
            return cached
        weights, norms, length = [{} for _ in range(self.n)], [0.0] * self.n, 0
        for ngram, count in precook(caption, self.n).items():
            order = len(ngram) - 1
            weight = count * (self.log_documents - math.log(max(1.0, self.document_frequency[ngram])))
            weights[order][ngram] = weight
            norms[order] += weight * weight
            if order == 1:
                length += count
        vector = (weights, [math.sqrt(norm) for norm in norms], length)
        if len(self._vectors) < 1_000_000:
            self._vectors[caption] = vector
        return vector

    def score(self, caption: str, references: Sequence[str]) -> float:
        """CIDEr of caption against references."""
        weights, norms, length = self._vector(caption)
        total = 0.0
        for reference in references:
            ref_weights, ref_norms, ref_length = self._vector(reference)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for order in range(self.n):
                dot = sum(min(weight, ref_weights[order].get(ngram, 0.0)) * ref_weights[order].get(ngram, 0.0)
                          for ngram, weight in weights[order].items())
                if norms[order] and ref_norms[order]:
                    dot /= norms[order] * ref_norms[order]
                total += dot * penalty
        return total / self.n / len(references) * 10.0
