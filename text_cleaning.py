"""Review text cleaning: the one recipe used by tuning, retraining, serving and the logged model.

The recipe is the published one: lowercase, strip emoji, URLs, HTML tags, then anything that is
not a letter or whitespace, drop NLTK's English stopwords but keep the negations (not, no, nor),
Porter-stem. `clean_text` does one review; `clean_texts` does a batch with identical output,
much faster, and is what the model pipelines call (so it also accepts a one-column DataFrame,
the shape MLflow's pyfunc hands over).

NLTK's stopword list ships in data/nltk_data in NLTK's corpus layout: nothing is downloaded.
Importing this module changes nothing outside it (no NLTK search path, no patched NLTK class).
"""
from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from nltk.stem import PorterStemmer
from nltk.tokenize import line_tokenize

NLTK_DATA_DIR = Path(__file__).resolve().parent / "data" / "nltk_data"
STOPWORDS_FILE = NLTK_DATA_DIR / "corpora" / "stopwords" / "english"


def nltk_stopwords(path: Path = STOPWORDS_FILE) -> list[str]:
    """NLTK's stopword list, read as NLTK's WordListCorpusReader.words reads it (nltk 3.9–3.10: one word
    per line, blank lines dropped, by NLTK's own line_tokenize) but straight from our file. NLTK ≥ 3.9.3
    refuses a data folder another account could write, which a checkout made with umask 002 is; this
    plain word list is held to every model's cleaning digest, so a changed list is refused at load."""
    return line_tokenize(path.read_text(encoding="utf-8"))


TEXT_COLUMN = "review"
NEGATIONS = frozenset({"not", "no", "nor"})
STOP_WORDS = frozenset(nltk_stopwords()) - NEGATIONS

_URL = re.compile(r"http\S+|www\S+|https\S+")
_HTML = re.compile(r"<.*?>")
_NOT_LETTER = re.compile(r"[^a-z\s]")
# The ASCII characters _NOT_LETTER removes, read off the pattern itself (so \s's \x1c-\x1f stay),
# for a bytes.translate that does the same job on ASCII text several times faster than re.sub.
_ASCII_NOT_LETTERS = bytes(c for c in range(128) if _NOT_LETTER.match(chr(c)))
# Whitespace that is not ASCII (no-break and ideographic spaces, ...): _NOT_LETTER keeps it, so only text
# holding some needs the regex; from any other text every non-ASCII character goes, and the rest is ASCII.
_NON_ASCII_SPACE = re.compile(r"[^\S\x00-\x7f]")
_ASCII_NOT_A_TO_Z = bytes(c for c in range(128) if chr(c) not in string.ascii_lowercase)
_STEMMER = PorterStemmer()

# Each of NLTK's Porter steps leaves a word unchanged unless it ends with one of that step's
# suffixes (nltk/stem/porter.py, NLTK_EXTENSIONS mode); the step still does all the work when it does.
_STEP_SUFFIXES = {
    "_step1a": ("s",),
    "_step1b": ("ed", "ing"),
    "_step1c": ("y",),
    "_step2": ("ational", "tional", "enci", "anci", "izer", "bli", "alli", "entli", "eli", "ousli",
               "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness", "aliti", "iviti",
               "biliti", "fulli", "logi"),
    "_step3": ("icate", "ative", "alize", "iciti", "ical", "ful", "ness"),
    "_step4": ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion",
               "ou", "ism", "ate", "iti", "ous", "ive", "ize"),
    "_step5a": ("e",),
    "_step5b": ("ll",),
}


class SuffixGuardedStemmer(PorterStemmer):
    """NLTK's PorterStemmer, ~3x faster on unseen words, with the same output.

    NLTK runs all eight steps on every word, and each builds its rule list and tries every suffix
    in Python. Most words end with none of a step's suffixes, so one C-level `str.endswith(tuple)`
    skips that step; otherwise NLTK's own step runs, so rules, conditions and mode stay NLTK's.
    (If a future NLTK renames a step, getattr fails when this is built rather than drifting silently.)
    """

    def __init__(self) -> None:
        super().__init__()
        for name, suffixes in _STEP_SUFFIXES.items():  # on this instance only: NLTK's class is untouched
            setattr(self, name, _only_if_suffixed(getattr(self, name), suffixes))


def _only_if_suffixed(step: Callable[[str], str], suffixes: tuple[str, ...]) -> Callable[[str], str]:
    def guarded(word: str) -> str:
        return step(word) if word.endswith(suffixes) else word
    return guarded


_FAST_STEMMER = SuffixGuardedStemmer()


def _strip(text: str) -> str:
    """Lowercase, then remove emoji, URLs, HTML tags and everything but letters and whitespace.

    Each pass runs only where it can change something: most reviews have no emoji worth removing,
    no "http"/"www" and no "<", and text without non-ASCII whitespace is filtered by bytes.translate
    once its non-ASCII characters (emoji, accented letters, curly quotes: none a-z) are dropped.
    """
    text = text.lower()
    if _emoji_can_matter(text):
        import emoji  # here: its table takes ~0.15 s to import, on the way to every first trial and model load

        text = emoji.replace_emoji(text, replace="")
    if "http" in text or "www" in text:
        text = _URL.sub("", text)
    if "<" in text:
        text = _HTML.sub("", text)
    if text.isascii() or not _NON_ASCII_SPACE.search(text):
        return text.encode("ascii", "ignore").translate(None, _ASCII_NOT_LETTERS).decode("ascii")
    return _NOT_LETTER.sub("", text)


def _emoji_can_matter(text: str) -> bool:
    """Skip the emoji scan (the slowest step) wherever it cannot change the result.

    No emoji holds a letter or whitespace, so the letters-only filter removes every emoji anyway;
    removing them first only matters where one sits inside a would-be URL ("http😀 x", and
    "ht1️⃣tp" too: keycap emoji hold an ASCII digit, '#' or '*'). Emoji are never all-ASCII, so
    ASCII text is safe, and so is text whose a-z letters, run together, hold no "http"/"www".
    """
    if text.isascii():
        return False
    letters = text.encode("ascii", "ignore").translate(None, _ASCII_NOT_A_TO_Z)
    return b"http" in letters or b"www" in letters


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    """Porter stemming is the bulk of cleaning new text; review vocabularies repeat, so remember
    answers (the benchmark empties this with _stem.cache_clear() to measure a cold start)."""
    return _FAST_STEMMER.stem(word)


def clean_text(text: object) -> str:
    """Clean one review, step by step as published."""
    return " ".join(_STEMMER.stem(w) for w in _strip(str(text)).split() if w not in STOP_WORDS)


def clean_texts(texts: Iterable[object] | pd.DataFrame | np.ndarray) -> list[str]:
    """Clean a batch of reviews: same output as `clean_text` on each, many times faster."""
    done: dict[str, str] = {}  # real exports repeat reviews ("Good", "Nice product")
    out = []
    for text in map(_as_text, _text_values(texts)):
        if text not in done:
            done[text] = " ".join([_stem(w) for w in _strip(text).split() if w not in STOP_WORDS])
        out.append(done[text])
    return out


def _as_text(value: object) -> str:
    """One review as text; a container here means rows were packed into one cell (e.g. pyfunc
    given {"review": [...]}), which would silently score them as one review."""
    if isinstance(value, (list, tuple, set, dict, np.ndarray)):
        raise TypeError(f"each review must be a string, got a {type(value).__name__}; "
                        f"pass a list of strings or a one-column DataFrame")
    return str(value)


def _text_values(texts: Iterable[object] | pd.DataFrame | np.ndarray) -> Iterable[object]:
    """Accept a list/Series/1-D array of texts, or a table with one text column (pyfunc's shape)."""
    if isinstance(texts, pd.DataFrame):
        if TEXT_COLUMN in texts.columns:
            return texts[TEXT_COLUMN].tolist()
        if texts.shape[1] == 1:
            return texts.iloc[:, 0].tolist()
        raise ValueError(
            f"expected a '{TEXT_COLUMN}' column or a single text column, got {list(texts.columns)}"
        )
    if isinstance(texts, np.ndarray) and texts.ndim == 2 and texts.shape[1] == 1:
        return texts[:, 0].tolist()
    if isinstance(texts, str):
        raise TypeError("clean_texts takes a batch of reviews; use clean_text for one")
    return texts
