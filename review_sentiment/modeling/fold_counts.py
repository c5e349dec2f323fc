"""Every trial's TF-IDF on a CV fold, derived from one count of that fold's texts.

A `TfidfVectorizer` fitted on a fold counts every n-gram of its training texts, then keeps columns
by document frequency (`min_df`, `max_df`) and term frequency (`max_features`), then applies idf,
sublinear tf and l2 normalisation. Only the counting is expensive (three quarters of a trial's
TF-IDF time), and it is the same for every trial of every family with the same n-gram range. So a
tuning run counts each fold once, with the longest n-gram range (a shorter range's counts are a
subset of its columns: `count_fold_sizes`), and each trial selects its
columns and weighs them (`tfidf_features`) exactly as the vectorizer would: the same terms in the
same order, the same matrices (tests/code/test_fold_counts.py holds it to `TfidfVectorizer` over
random parameters, ties at the `max_features` cut included).

The same counts serve the refit: the calibration's out-of-fold models are the CV folds' (`CountedFolds`),
and the model that gets logged has its `TfidfVectorizer` fitted from one count of all the training texts
(`fit_tfidf`), which the three families share: the vectorizer is left exactly as `fit` leaves it.
The selection repeats sklearn's `CountVectorizer._limit_features` (private, so not called), and
`fit_tfidf` the state `TfidfVectorizer.fit` sets: sklearn has no public way to apply the limits to counts
it already made (both pinned by tests/code/test_fold_counts.py's test_pinned_*).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.model_selection import StratifiedKFold

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.processes import forked_pool, kept

NGRAM_SIZES = (1, 2)  # a TF-IDF here uses word n-grams up to one of these sizes
LARGE_FILE_REVIEWS = 500_000  # usable reviews above which a tuning run cross-validates on 3 folds, not 5
SMALL_FILE_REVIEWS = 20_000  # usable reviews up to which a trial scores its folds itself unless told
Features = tuple[sparse.csr_array, sparse.csr_array]  # of a fold's training and validation texts


@dataclass(frozen=True)
class FoldCounts:
    """One fold's n-gram counts: of its training and validation texts over the training texts'
    vocabulary (sorted, as the vectorizer sorts it; the terms themselves are not kept: a trial needs
    only their frequencies, and a million reviews hold millions of bigrams). The matrices may hold
    more columns than the vocabulary (a longer n-gram range's count of the same texts): `columns` says
    which are this vocabulary's, in its order."""

    train: sparse.csr_array  # whole counts in the smallest unsigned integer type that holds them
    valid: sparse.csr_array
    doc_freq: np.ndarray  # per term, in how many training texts it occurs
    term_freq: np.ndarray  # per term, how often it occurs in all training texts (float64, as the vectorizer's)
    columns: np.ndarray | None = None  # None: every column of `train` and `valid`, in order
    terms: np.ndarray | None = None  # the vocabulary's terms, in its order, when asked for (`fit_tfidf` needs them)


def count_fold_sizes(train_texts: Sequence[str] | np.ndarray, valid_texts: Sequence[str] | np.ndarray,
                     ngram_sizes: Sequence[int], keep_terms: bool = False) -> dict[int, FoldCounts]:
    """Raises ValueError (sklearn's "empty vocabulary") when the training texts hold no word at all.

    The fold's counts for every n-gram range (1, n) of `ngram_sizes`, from one count with the longest:
    a shorter range's terms are the longer one's with fewer spaces, with the same counts, and in the same
    order (the vectorizer sorts terms; within a row, it keeps the order in which the text first gave them,
    and a text gives all its single words before its pairs)."""
    counter = CountVectorizer(ngram_range=(1, max(ngram_sizes)), dtype=np.int32)
    train, valid = _compact(counter.fit_transform(train_texts)), _compact(counter.transform(valid_texts))
    terms = counter.get_feature_names_out()
    doc_freq = np.bincount(train.indices, minlength=train.shape[1])
    term_freq = np.asarray(train.sum(axis=0, dtype=np.float64)).ravel()
    words_per_term = np.fromiter((term.count(" ") + 1 for term in terms), dtype=np.int64, count=len(terms))
    out = {}
    for n_max in ngram_sizes:
        if n_max == max(ngram_sizes):
            out[n_max] = FoldCounts(train, valid, doc_freq, term_freq, terms=terms if keep_terms else None)
        else:
            columns = np.flatnonzero(words_per_term <= n_max)
            out[n_max] = FoldCounts(train, valid, doc_freq[columns], term_freq[columns], columns,
                                    terms[columns] if keep_terms else None)
    return out


@dataclass(frozen=True)
class CountedFolds:
    """The CV folds of the training set and each fold's n-gram counts per n-gram size (one count of the
    longest range per fold): made once per run, before workers fork (so they share them), and every
    trial of every family derives its TF-IDF from them, as does the calibration of the refit model
    when its folds are these. Counting per trial was three quarters of a trial's TF-IDF time."""

    labels: list[tuple[np.ndarray, np.ndarray]]  # per fold, the training and validation labels
    held: list[np.ndarray]  # per fold, the positions of its validation texts in the training set
    counts: dict[int, list[FoldCounts]]
    whole: dict[int, FoldCounts] | None = None  # `count_whole` of the training and held-out texts, where
    # they were given: made beside the folds' (where a fold's process is free for it) rather than at the refit


def count_whole(clean_train: Sequence[str] | np.ndarray, clean_held_out: Sequence[str]) -> dict[int, FoldCounts]:
    """One count of all the cleaned training texts, and of the held-out ones over their vocabulary, per
    n-gram size: every family's refit derives its TF-IDF from it (`fit_tfidf`). Raises sklearn's
    ValueError when the training texts hold no word."""
    return count_fold_sizes(clean_train, clean_held_out, NGRAM_SIZES, keep_terms=True)


def counted(clean_train: Sequence[str], y_train: np.ndarray, *, folds: int, seed: int, processes: int = 1,
            held_out: Sequence[str] | None = None) -> CountedFolds:
    """Raises ReviewDataError when a fold's training texts hold no word at all (a tiny data set).
    `held_out`: the cleaned held-out texts, to make the refit's count too (`CountedFolds.whole`).
    `processes`: how many counts are made at a time, each in a process forked with the texts. Counting is
    Python, one core's work: at a million reviews ~7 s a fold and ~10 s the refit's, which one process made
    one after another (3 folds on 2 processes leave one idle for a fold's time: the refit's count goes there)."""
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y_train)), y_train))
    texts = _Texts(np.asarray(clean_train, dtype=object), splits, held_out)
    jobs = [*range(folds), *([_WHOLE] if held_out is not None else [])]
    try:
        made = [_count(texts, job) for job in jobs] if processes <= 1 else _counted_in_processes(texts, jobs, processes)
    except ValueError as err:
        if left_no_words(err):
            raise ReviewDataError(f"a {folds}-fold split leaves a fold whose training reviews have no word after "
                                  f"cleaning: too few reviews with words for {folds} folds") from None
        raise
    by_fold = made[:folds]
    return CountedFolds([(y_train[train], y_train[valid]) for train, valid in splits],
                        [valid for _, valid in splits],
                        {n_max: [fold[n_max] for fold in by_fold] for n_max in NGRAM_SIZES},
                        made[folds] if held_out is not None else None)


_WHOLE = -1  # the job of `counted` that makes the refit's count


class CountingProcessDied(RuntimeError):
    """A process of `counted` ended before its count was in (the kernel's out-of-memory killer, say)."""


@dataclass(frozen=True)
class _Texts:
    """What `counted` counts: the cleaned training texts, the folds' positions in them, the held-out texts."""

    train: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    held_out: Sequence[str] | None


def _counted_in_processes(texts: _Texts, jobs: list[int], processes: int) -> list[dict[int, FoldCounts]]:
    pool = None
    try:
        pool = forked_pool(min(processes, len(jobs)), texts)
        made = list(pool.map(_count_kept, jobs))
    except BaseException as err:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)  # a count still under way is not waited for
        if isinstance(err, BrokenProcessPool):
            raise CountingProcessDied("a process counting the CV folds died (killed, or out of memory)") from None
        raise
    pool.shutdown()
    return made


def _count(texts: _Texts, job: int) -> dict[int, FoldCounts]:
    if job == _WHOLE:
        assert texts.held_out is not None
        return count_whole(texts.train, texts.held_out)
    train, valid = texts.splits[job]
    return count_fold_sizes(texts.train[train], texts.train[valid], NGRAM_SIZES)


def _count_kept(job: int) -> dict[int, FoldCounts]:
    return _count(kept(), job)


def _compact(counts: sparse.csr_array) -> sparse.csr_array:
    """The same counts in the smallest unsigned integer type that holds them (exact: they are whole)."""
    largest = counts.data.max(initial=0)
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if largest <= np.iinfo(t).max)
    return sparse.csr_array((counts.data.astype(dtype), counts.indices, counts.indptr), shape=counts.shape)


def cv_folds(usable_reviews: int) -> int:
    """The CV folds a tuning run uses unless told (`--folds`): 5; 3 for a file of more than
    `LARGE_FILE_REVIEWS` usable reviews. There each fold model still trains on 230,000+ reviews and the
    mean of 3 folds' F1 moves by well under the 0.005 that tells families apart, while a trial fits 2
    training sets' worth of rows instead of 4 (half the time at a million reviews: docs/results.md)."""
    return 3 if usable_reviews > LARGE_FILE_REVIEWS else 5


def fold_processes_by_default(usable_reviews: int, cores: int, workers: int) -> int:
    """How many processes score a trial's folds unless told (`--n-jobs 0`): the cores shared among the
    workers; none (the trial scores its folds itself) for a file of up to `SMALL_FILE_REVIEWS` usable
    reviews. There a fold takes milliseconds: handing folds to processes and back, on cores the run's
    writer process needs too, costs more than it saves. Whole runs on 2 cores, in-process against two
    processes, by usable reviews: 1,373 (the published pipeline's) 9.86 s against 10.25 s (medians of 3);
    7,413 (generated) 12.06 s against 12.97 s; 17,404 16.64 s against 16.81 s; but 43,402 28.6 s against
    26.2 s."""
    return 1 if usable_reviews <= SMALL_FILE_REVIEWS else max(1, cores // workers)


def left_no_words(err: ValueError) -> bool:
    """Whether sklearn's error says a TF-IDF kept no term (its wording is all it gives to tell)."""
    return "empty vocabulary" in str(err) or "no terms remain" in str(err)


def kept_columns(counts: FoldCounts, min_df: float, max_df: float, max_features: int | None) -> np.ndarray:
    """The columns a vectorizer with these limits keeps, in its order; its ValueErrors where it raises.
    As in sklearn, an int `min_df`/`max_df` counts documents and a float is a share of them."""
    n_doc = counts.train.shape[0]
    max_doc_count = max_df if isinstance(max_df, Integral) else max_df * n_doc
    min_doc_count = min_df if isinstance(min_df, Integral) else min_df * n_doc
    if max_doc_count < min_doc_count:
        raise ValueError("max_df corresponds to < documents than min_df")
    mask = (counts.doc_freq <= max_doc_count) & (counts.doc_freq >= min_doc_count)
    if max_features is not None and mask.sum() > max_features:
        # the same unstable argsort on the same array as sklearn: ties at the cut fall the same way
        most_frequent = np.flatnonzero(mask)[(-counts.term_freq[mask]).argsort()[:max_features]]
        mask = np.zeros_like(mask)
        mask[most_frequent] = True
    kept = np.flatnonzero(mask)
    if not len(kept):
        raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
    return kept


def tfidf_features(counts: FoldCounts, params: dict[str, Any]) -> Features:
    """The fold's training and validation features under a trial's TF-IDF parameters (see
    `families.build_pipeline` for their names): what `TfidfVectorizer.fit_transform` and `transform` give."""
    kept = kept_columns(counts, params["tfidf_min_df"], params["tfidf_max_df"], params["tfidf_max_features"])
    return _weighed(counts, kept, TfidfTransformer(sublinear_tf=params["tfidf_sublinear_tf"]))


def fit_tfidf(tfidf: TfidfVectorizer, counts: FoldCounts) -> Features:
    """Fit `tfidf` (an unfitted word n-gram vectorizer of the counts' range or a shorter one) on the texts
    `counts` counted (with `keep_terms`), leaving it as `fit` on them leaves it; return what its
    `fit_transform` of those texts and its `transform` of the counted validation texts give."""
    assert counts.terms is not None, "fit_tfidf needs counts made with keep_terms"
    assert tfidf.ngram_range[0] == 1 and tokenises_by_default(tfidf), \
        "fit_tfidf: the vectorizer must tokenise as the counts' CountVectorizer did"
    kept = kept_columns(counts, tfidf.min_df, tfidf.max_df, tfidf.max_features)
    weigh = TfidfTransformer(norm=tfidf.norm, use_idf=tfidf.use_idf, smooth_idf=tfidf.smooth_idf,
                             sublinear_tf=tfidf.sublinear_tf)
    features = _weighed(counts, kept, weigh)
    tfidf.build_analyzer()  # what fit's counting does first (it records the stop words it checked)
    tfidf.fixed_vocabulary_ = False
    tfidf.vocabulary_ = {str(term): i for i, term in enumerate(counts.terms[kept])}
    tfidf._tfidf = weigh
    return features


def tokenises_by_default(vectorizer: CountVectorizer) -> bool:
    """Whether `vectorizer` splits text into terms as a default `CountVectorizer` does (lowercase, the
    default token pattern, word n-grams, no stop words), whatever its n-gram range and limits."""
    params = vectorizer.get_params()
    return all(params[k] == v for k, v in CountVectorizer().get_params().items() if k not in _LIMITS)


_LIMITS = ("ngram_range", "min_df", "max_df", "max_features", "dtype")  # what a vectorizer here may set


def _weighed(counts: FoldCounts, kept: np.ndarray, weigh: TfidfTransformer) -> Features:
    """The kept vocabulary positions' counts as TF-IDF, `weigh` fitted on the training ones."""
    columns = kept if counts.columns is None else counts.columns[kept]
    train, valid = (_as_float(counts.train[:, columns]), _as_float(counts.valid[:, columns]))
    weigh.fit(train)
    return weigh.transform(train, copy=False), weigh.transform(valid, copy=False)


def _as_float(counts: sparse.csr_array) -> sparse.csr_array:
    """float64 counts, as the vectorizer makes them: the tf-idf maths then runs on the same numbers."""
    return sparse.csr_array((counts.data.astype(np.float64), counts.indices, counts.indptr), shape=counts.shape)
