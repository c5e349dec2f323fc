"""Load a review CSV, check it, label it and split it — every user mistake becomes a ReviewDataError.

Ratings 1–2 are negative (0), 3–5 positive (1). Rows with no text or rating and exact duplicate
(text, rating) pairs are dropped and counted, because real exports are full of both.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from review_sentiment.constants import DEFAULT_RATING_COL, DEFAULT_TEXT_COL, LABEL_NAMES


class ReviewDataError(ValueError):
    """A problem with the user's data, reported as one line without a traceback."""


@dataclass(frozen=True)
class Reviews:
    """Labelled reviews ready to split, plus what loading did to get there."""

    path: Path
    text: pd.Series
    rating: pd.Series
    label: pd.Series
    rows_read: int
    dropped_missing: int
    dropped_duplicates: int
    usable_text: pd.Series  # every usable review, duplicates kept: what traffic looks like (for monitoring)

    @property
    def frame(self) -> pd.DataFrame:
        """The cleaned-up table that training sees (what MLflow records as the dataset)."""
        return pd.DataFrame({"review": self.text, "rating": self.rating, "label": self.label})


def data_digest(frame: pd.DataFrame) -> str:
    """A digest of every row and column. MLflow's dataset digest reads only the first 10,000 rows,
    so an edit past them went unnoticed; this costs ~1.2 s per million reviews
    (benchmarks/bench_data_digest.py)."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


def review_hashes(texts: Iterable[str], key: bytes = b"") -> np.ndarray:
    """A compact identity per review text, in order (8-byte BLAKE2b, stable across versions and
    machines): models record those of their training reviews, so promotion can leave them out. With
    `key`, a keyed one (BLAKE2b's own key; empty is the unkeyed hash)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=key).digest())
                        for t in texts), dtype=np.uint64)


@dataclass(frozen=True)
class Split:
    """A stratified train/test split of raw review texts and 0/1 labels."""

    X_train: pd.Series
    X_test: pd.Series
    y_train: np.ndarray
    y_test: np.ndarray


def load_reviews(
    path: str | Path, text_col: str = DEFAULT_TEXT_COL, rating_col: str = DEFAULT_RATING_COL
) -> Reviews:
    """Read a CSV (or TSV by extension), drop unusable rows, and label ratings."""
    path = Path(path)
    raw = _read_table(path)
    _require_columns(path, raw, [text_col, rating_col], "--text-col / --rating-col")
    df = raw[[text_col, rating_col]].rename(columns={text_col: "text", rating_col: "rating"})
    df["text"] = _stripped_text(df["text"])
    usable = df.dropna()
    usable = usable.assign(rating=_check_ratings(path, rating_col, usable["rating"]))
    deduped = usable.drop_duplicates()
    label = (deduped["rating"] >= 3).astype(int).rename("label")
    if label.nunique() < 2:
        only = LABEL_NAMES[int(label.iloc[0])] if len(label) else "none"
        raise ReviewDataError(
            f"{path}: every usable review is {only}; training needs both negative (1–2) "
            f"and positive (3–5) ratings"
        )
    return Reviews(
        path=path,
        text=deduped["text"].astype(object).rename("review"),
        rating=deduped["rating"],
        label=label,
        rows_read=len(raw),
        dropped_missing=len(df) - len(usable),
        dropped_duplicates=len(usable) - len(deduped),
        usable_text=usable["text"].astype(object),
    )


def with_feedback(reviews: Reviews, split: Split, texts: pd.Series, labels: pd.Series, test_size: float,
                  seed: int) -> tuple[Reviews, Split, Split]:
    """Add reviews whose true label came back through the service, one per distinct text with its latest
    label. The lineage's held-out rule applies to them too: the held-out ones are never trained on (they
    judge candidates, as the file's held-out slice does, and a fed-back label never reaches the file's
    slice), the rest join training, replacing the file's training row of the same text (a person said so,
    later). Returns the reviews with the fed-back texts counted as traffic (for the reference profile),
    the training split with them, and the feedback's own split: trained on, and held out."""
    fed = pd.DataFrame({"text": texts.astype(object).str.strip(), "label": labels.astype(int)})
    fed = fed[fed["text"] != ""].drop_duplicates("text", keep="last")  # `texts` in the order the labels came
    held = held_out(fed["text"], test_size, seed)
    trained, judged = fed[~held], fed[held]
    kept = ~split.X_train.isin(trained["text"])
    X_train = pd.concat([split.X_train[kept], trained["text"]], ignore_index=True).rename("review")
    y_train = np.concatenate([split.y_train[kept.to_numpy()], trained["label"].to_numpy()])
    usable = pd.concat([reviews.usable_text[~reviews.usable_text.isin(fed["text"])], fed["text"]], ignore_index=True)
    return (replace(reviews, usable_text=usable), Split(X_train, split.X_test, y_train, split.y_test),
            Split(trained["text"], judged["text"], trained["label"].to_numpy(), judged["label"].to_numpy()))


def training_frame(split: Split) -> pd.DataFrame:
    """The rows a model is fitted on, as MLflow records its training dataset."""
    return pd.DataFrame({"review": split.X_train.to_numpy(dtype=object), "label": split.y_train})


def held_out(texts: Iterable[str], fraction: float, seed: int) -> np.ndarray:
    """Which reviews a lineage holds out from training: those whose seeded hash of the text falls below
    `fraction`. A review's place depends on its text and the seed alone, so every model of the lineage
    (tuned, retrained, with feedback or on a file with rows appended) leaves the same reviews out, and
    each label's share of the held-out slice is `fraction` in expectation (stratified by chance)."""
    hashes = review_hashes(texts, key=seed.to_bytes(8, "little", signed=True))
    return hashes < np.uint64(min(int(fraction * 2**64), 2**64 - 1))


def traffic_like(texts: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Positions of rows of a lineage's file that stand for its future traffic as its models will meet
    it: every held-out row (texts they never saw, repeats included), plus rows whose text they trained
    on, in the share a new review repeats a training text. That share is estimated leave-one-out: the
    rows whose training text another row of the file holds too (a "Good" that comes again). Without the
    familiar texts the reference looked stranger than real traffic (out-of-vocabulary shares and scores
    alarmed on reviews of the same product); with every training row it would look more familiar."""
    held = held_out(texts, fraction, seed)
    familiar = np.flatnonzero(~held & texts.duplicated(keep=False).to_numpy())
    share = len(familiar) / len(texts)
    wanted = round(held.sum() * share / (1 - share)) if share < 1 else 0
    rng = np.random.default_rng(seed)
    return np.concatenate([np.flatnonzero(held), rng.choice(familiar, wanted, replace=wanted > len(familiar))])


def split_reviews(reviews: Reviews, test_size: float, folds: int, seed: int) -> Split:
    """The seeded held-out split (see `held_out`), checked to leave every class enough rows for k-fold CV."""
    counts = reviews.label.value_counts()
    # pandas-stubs types an index label as Hashable; these are the 0/1 labels
    smallest, name = int(counts.min()), LABEL_NAMES[int(counts.idxmin())]  # type: ignore[call-overload]
    if smallest < 2:
        raise ReviewDataError(
            f"{reviews.path}: too few reviews to split ({len(reviews.label)} usable, {smallest} {name}): each "
            f"label needs one review to hold out and one to train on"
        )
    test = held_out(reviews.text, test_size, seed)
    X_train, X_test = reviews.text[~test], reviews.text[test]
    y_train, y_test = reviews.label.to_numpy()[~test], reviews.label.to_numpy()[test]
    if not len(y_test) or not len(y_train):
        empty = "test" if not len(y_test) else "training"
        raise ReviewDataError(
            f"{reviews.path}: too few reviews to split ({len(reviews.label)} usable, {smallest} {name}): "
            f"the {empty} split is empty at --test-size {test_size:g}"
        )
    if len(np.unique(y_test)) < 2:
        absent = LABEL_NAMES[1 - int(y_test[0])]
        raise ReviewDataError(
            f"{reviews.path}: the test split holds no {absent} review ({len(y_test)} reviews, "
            f"{smallest} {name} in all); raise --test-size or add data"
        )
    if len(np.unique(y_train)) < 2 or np.bincount(y_train, minlength=2).min() < folds:
        raise ReviewDataError(
            f"{reviews.path}: too few {name} reviews for {folds}-fold CV: {smallest} usable, "
            f"{np.bincount(y_train, minlength=2).min()} left for training after the test split; "
            f"need at least {folds} (add data or lower --folds)"
        )
    return Split(X_train, X_test, y_train, y_test)


def load_texts(path: str | Path, text_col: str = DEFAULT_TEXT_COL) -> pd.Series:
    """Reviews to score: every row of the text column, in file order (missing text stays NA)."""
    path = Path(path)
    table = _read_table(path)
    _require_columns(path, table, [text_col], "--text-col")
    return _stripped_text(table[text_col]).rename("review")


def _stripped_text(column: pd.Series) -> pd.Series:
    """Text without surrounding whitespace; blank counts as missing."""
    # pandas-stubs does not list pd.NA among replace's values; pandas documents any scalar
    return column.astype("string").str.strip().replace("", pd.NA)  # type: ignore[call-overload]


def _require_columns(path: Path, table: pd.DataFrame, columns: list[str], flags: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ReviewDataError(
            f"{path}: no column {', '.join(map(repr, missing))}; "
            f"columns are: {', '.join(map(repr, table.columns))} (use {flags})"
        )


def _first_undecodable(path: Path) -> str:
    """Where the file first stops being UTF-8. pandas' error gives the offset within the piece it was
    decoding, not the file's: the file is decoded again, a MiB at a time, to find it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    read = lines = 0  # bytes read before the piece, and the newlines in them
    with path.open("rb") as file:
        while True:
            piece = file.read(1 << 20)
            pending = decoder.getstate()[0]  # a character's first bytes, from the piece before
            try:
                decoder.decode(piece, final=not piece)
            except UnicodeDecodeError as err:
                line = lines + (pending + piece).count(b"\n", 0, err.start) + 1
                return f"line {line}, byte {read - len(pending) + err.start} of the file: {err.reason}"
            if not piece:
                return "not found again: the file changed"
            read, lines = read + len(piece), lines + piece.count(b"\n")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise ReviewDataError(f"{path}: file not found")
    if not path.is_file():
        raise ReviewDataError(f"{path}: not a file")
    sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    try:
        table = pd.read_csv(path, sep=sep, encoding="utf-8", skip_blank_lines=False)  # rows keep their numbers
    except PermissionError:
        raise ReviewDataError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ReviewDataError(f"{path}: not a UTF-8 text CSV ({_first_undecodable(path)})") from None
    except pd.errors.EmptyDataError:
        raise ReviewDataError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, csv.Error) as err:
        raise ReviewDataError(f"{path}: not a readable CSV ({str(err).strip()})") from None
    except OSError as err:
        raise ReviewDataError(f"{path}: cannot read ({err.strerror or err})") from None
    if table.empty:
        raise ReviewDataError(f"{path}: no data rows")
    return table


def _check_ratings(path: Path, rating_col: str, ratings: pd.Series) -> pd.Series:
    """Ratings must be whole numbers 1–5 (4 and 4.0 are fine, '4 stars' and 4.5 are not)."""
    numeric = pd.to_numeric(ratings, errors="coerce")
    bad = numeric.isna() | (numeric % 1 != 0) | ~numeric.between(1, 5)
    if bad.any():
        rows = bad[bad].index[:3]
        shown = ratings.astype(object)  # Python values: 0, not np.int64(0)
        where = ", ".join(f"row {i + 2} ({shown[i]!r})" for i in rows)
        more = f" and {int(bad.sum()) - len(rows)} more" if bad.sum() > len(rows) else ""
        raise ReviewDataError(
            f"{path}: column {rating_col!r} must hold whole-number ratings 1–5; "
            f"bad values at {where}{more} (row 1 is the header)"
        )
    return numeric.astype(int).rename("rating")
