"""Cleaning: each step, negations kept, batch output identical to the per-review function; the
tests named test_pinned_* must pass before the nltk pin moves (we mirror its reader and stemmer)."""
import itertools
import os
import random
import re
import stat
import string
import subprocess
import sys
from pathlib import Path

import emoji
import nltk
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.stem import PorterStemmer

import text_cleaning
from review_sentiment.tracking.model_logging import SAME_CLEANING_AS, cleaning_digest
from tests.helpers import PROJECT_DIR, SAMPLE
from text_cleaning import STOP_WORDS, clean_text, clean_texts


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("GREAT Laptop", "great laptop"),
        ("Love it 😍👍🏻 so much", "love much"),
        ("see https://youtu.be/abc and www.example.com/x now", "see"),
        ("<b>Bold</b> move<br>here", "bold moveher"),  # tags go without a space, as published
        ("5 stars!!! 10/10, worth ₹58,500.", "star worth"),
        ("The battery is draining", "batteri drain"),
        ("This is not good at all", "not good"),
        ("no complaints, nor regrets", "no complaint nor regret"),
        ("", ""),
    ],
)
def test_each_step(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_negations_survive_but_other_stopwords_go() -> None:
    assert {"not", "no", "nor"}.isdisjoint(STOP_WORDS)
    assert {"the", "is", "at", "very"} <= STOP_WORDS


def test_pinned_nltk_stopwords_are_read_as_nltks_own_reader_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equivalence test for the nltk pin: our reading of the shipped list is NLTK's, word for word."""
    monkeypatch.setattr(nltk.data, "path", [str(text_cleaning.NLTK_DATA_DIR)])
    english = nltk.corpus.reader.WordListCorpusReader(nltk.data.find("corpora/stopwords"), ["english"]).words()
    assert len(english) == 179 and text_cleaning.nltk_stopwords() == english
    assert set(english) - {"not", "no", "nor"} == STOP_WORDS


@pytest.mark.e2e  # a fresh interpreter importing NLTK (~1.7 s)
def test_importing_the_cleaning_leaves_nltk_as_it_was() -> None:
    code = ("import nltk; before = list(nltk.data.path); from nltk.stem import PorterStemmer as P; "
            "steps = dict(vars(P)); import text_cleaning; "
            "assert nltk.data.path == before and dict(vars(P)) == steps, 'changed'")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e  # a fresh interpreter in a copied checkout (~1.6 s)
def test_a_checkout_made_with_umask_002_cleans_as_any_other(tmp_path: Path) -> None:
    """Group-writable folders (umask 002, `git archive | tar`): NLTK refuses to read data from them; the
    cleaning reads its own word list and works (a changed list is refused by the cleaning digest)."""
    tracked = subprocess.run(["git", "ls-files", "text_cleaning.py", "data/nltk_data"], cwd=PROJECT_DIR,
                             capture_output=True, text=True, check=True).stdout.split()
    previous = os.umask(0o002)
    try:
        for name in tracked:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes((PROJECT_DIR / name).read_bytes())
    finally:
        os.umask(previous)
    assert (tmp_path / "data" / "nltk_data").stat().st_mode & stat.S_IWGRP
    done = subprocess.run([sys.executable, "-c", "import text_cleaning; print(text_cleaning.clean_text("
                           "'The battery is not draining'))"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0 and done.stdout == "batteri not drain\n", done.stderr[-2000:]


TRICKY = [
    "Nice 👍", "http😀 x", "ht😀tp://a.b c", "www😀 site", "😀http://x.y", "<😀>tag", "Ké 😀 nice",
    "ＷＩＤＥ ｆｕｌｌ", "İstanbul", "\u212a elvin", "tab\tand\u00a0nbsp", "😀", "🏴󠁧󠁢󠁥󠁮󠁧󠁿 flag",
    "1️⃣ keycap", "not😀good", "h1️⃣ttp://x.y/z nice", "ww#️⃣w.site.com good", "ht*️⃣tps://a b",
    None, 42, float("nan"),
] + list(emoji.EMOJI_DATA)[::50]


def test_batch_equals_per_review_on_tricky_text() -> None:
    assert clean_texts(TRICKY) == [clean_text(t) for t in TRICKY]


# Any text: every script, emoji, marks, and the whitespace only the regex path keeps (no-break, ideographic,
# information separators, next line) beside ASCII letters, URLs and tags
ANY_TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(["\xa0", "\u2009", "\u3000", "\x1c", "\x85", " ", "é",
                                                                 "http://x.io/a", "www", "<b>", "😍", "1️⃣", "Not"])),
                    max_size=40).map("".join)


PUBLISHED_STEMMER = PorterStemmer()


def published_clean_text(text: str) -> str:
    """The published per-review cleaning, step for step (../shared/reference/published_pipeline.py),
    with NLTK's stopwords less the negations, as ours keeps them."""
    text = emoji.replace_emoji(str(text).lower(), replace="")
    text = re.sub(r"http\S+|www\S+|https\S+", "", text)
    text = re.sub(r"<.*?>", "", text)
    text = re.sub(r"[^a-z\s]", "", text)
    return " ".join(PUBLISHED_STEMMER.stem(w) for w in text.split() if w not in STOP_WORDS)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=5))
def test_batch_and_per_review_equal_the_published_steps_on_any_text(texts: list[str]) -> None:
    expected = [published_clean_text(t) for t in texts]
    assert clean_texts(texts) == expected == [clean_text(t) for t in texts]


def test_a_keycap_inside_a_urls_letters_is_removed_before_the_url() -> None:
    """Keycap emoji hold an ASCII character ("1️⃣" is "1" + two marks), which once hid a split "http"
    from the check that decides whether emoji must go first."""
    assert clean_texts(["h1️⃣ttp://x.y/z nice"]) == ["nice"] == [clean_text("h1️⃣ttp://x.y/z nice")]


def test_pinned_the_batch_stemmer_is_nltks_porter_stemmer_word_for_word() -> None:
    """The batch path skips a Porter step for words without that step's suffixes; on every word of
    the sample, every a-z string up to three letters and 60,000 made-up words stacking the steps'
    suffixes, it stems as NLTK does."""
    suffixes = sorted({s for step in text_cleaning._STEP_SUFFIXES.values() for s in step}
                      | {"sses", "ies", "ied", "eed", "at", "bl", "iz", "ly", "ings", "fully", "ations", "izers"})
    rng = random.Random(0)
    made_up = ["".join(rng.choice(string.ascii_lowercase + "aeiouyy") for _ in range(rng.randint(1, 7)))
               + "".join(rng.choice(suffixes) for _ in range(rng.randint(0, 3))) for _ in range(60_000)]
    short = ("".join(letters) for n in (1, 2, 3) for letters in itertools.product(string.ascii_lowercase, repeat=n))
    sample = pd.read_csv(SAMPLE)["Review text"].dropna().str.lower().str.findall("[a-z]+").explode().dropna()
    words = set(made_up).union(short, sample)
    nltk_stemmer = PorterStemmer()
    assert [text_cleaning._FAST_STEMMER.stem(w) for w in words] == [nltk_stemmer.stem(w) for w in words]


def test_batch_accepts_every_shape_the_model_gets() -> None:
    texts = ["not good", "Great!"]
    expected = [clean_text(t) for t in texts]
    assert clean_texts(pd.Series(texts)) == expected
    assert clean_texts(np.array(texts, dtype=object)) == expected
    assert clean_texts(pd.DataFrame({"review": texts})) == expected
    assert clean_texts(pd.DataFrame({"anything": texts})) == expected
    assert clean_texts(np.array([[t] for t in texts], dtype=object)) == expected
    with pytest.raises(ValueError, match="review"):
        clean_texts(pd.DataFrame({"a": texts, "b": texts}))
    with pytest.raises(TypeError):
        clean_texts("one review")
    with pytest.raises(TypeError, match="each review must be a string, got a list"):
        clean_texts(pd.DataFrame({"review": [texts]}))


def test_pinned_changing_the_cleaning_code_decides_about_every_registered_model() -> None:
    """Each registered version carries the digest of the cleaning it trained with, and the service and
    batch scoring refuse a digest that is neither ours nor in SAME_CLEANING_AS. So a change to
    text_cleaning.py's code disowns every existing model unless the old digest, when its output is the
    same, joins SAME_CLEANING_AS. Decide that, then pin the new digest here."""
    assert cleaning_digest() == "d51e67feff0f30c1"
    assert "1fae1224ddaef7a6" in SAME_CLEANING_AS  # the code before this digest: same output
