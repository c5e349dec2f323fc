"""Cleaning: each step, negations kept, batch output identical to the per-review function."""
import itertools
import random
import string

import emoji
import nltk
import numpy as np
import pandas as pd
import pytest
from nltk.stem import PorterStemmer

import text_cleaning
from tests.helpers import SAMPLE
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


def test_stopwords_come_from_the_shipped_nltk_corpus() -> None:
    """The list loads offline, through nltk, from the project's own data folder."""
    english = nltk.corpus.stopwords.words("english")
    assert len(english) == 179
    assert set(english) - {"not", "no", "nor"} == STOP_WORDS
    assert str(text_cleaning.NLTK_DATA_DIR) in nltk.data.path


TRICKY = [
    "Nice 👍", "http😀 x", "ht😀tp://a.b c", "www😀 site", "😀http://x.y", "<😀>tag", "Ké 😀 nice",
    "ＷＩＤＥ ｆｕｌｌ", "İstanbul", "\u212a elvin", "tab\tand\u00a0nbsp", "😀", "🏴󠁧󠁢󠁥󠁮󠁧󠁿 flag",
    "1️⃣ keycap", "not😀good", "h1️⃣ttp://x.y/z nice", "ww#️⃣w.site.com good", "ht*️⃣tps://a b",
    None, 42, float("nan"),
] + list(emoji.EMOJI_DATA)[::50]


def test_batch_equals_per_review_on_tricky_text() -> None:
    assert clean_texts(TRICKY) == [clean_text(t) for t in TRICKY]


def test_a_keycap_inside_a_urls_letters_is_removed_before_the_url() -> None:
    """Keycap emoji hold an ASCII character ("1️⃣" is "1" + two marks), which once hid a split "http"
    from the check that decides whether emoji must go first."""
    assert clean_texts(["h1️⃣ttp://x.y/z nice"]) == ["nice"] == [clean_text("h1️⃣ttp://x.y/z nice")]


def test_the_batch_stemmer_is_nltks_porter_stemmer_word_for_word() -> None:
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
