"""How a sentiment pipeline is logged, so that any MLflow client can load it offline.

Raw text in: the cleaning module and its stopword data travel with the model (`code_paths`); skops
trusts exactly one function of ours (`text_cleaning.clean_texts`); the signature is one unnamed
string column; requirements are pinned explicitly. Models logged before the package existed have
this same format, so they load and score the same way.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import tokenize
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from sklearn.pipeline import Pipeline

import text_cleaning
from review_sentiment.data.reviews import Reviews, Split, data_digest, review_hashes
from review_sentiment.monitoring.profile import PROFILE_ARTIFACT, reference_profile

MODEL_ARTIFACT = "model"
TRAINING_REVIEWS_ARTIFACT = "training_review_hashes.npy"  # sorted unique uint64: data.reviews.review_hashes
_REQUIREMENTS = ("scikit-learn", "skops", "nltk", "emoji", "pandas", "numpy", "mlflow")
# One unnamed string column: pyfunc then takes a list, a Series, an array or a one-column
# DataFrame (any column name) and every REST payload format, one prediction per review.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("long")]))
# The one type of ours a logged model may ask skops to trust; loading holds every model to this list.
TRUSTED_TYPES = (f"{text_cleaning.clean_texts.__module__}.{text_cleaning.clean_texts.__qualname__}",)
CLEANING_DIGEST_TAG = "cleaning_digest"  # on every registered version: the cleaning it was trained with
# Digests of earlier text_cleaning.py whose output this one reproduces, so their models are still
# scored here: 751cbb5a0f209a0a (before the suffix-guarded stemmer and ASCII fast paths; it differed
# only where a keycap emoji split a URL's "http"/"www", which it left in — it kept "httpxyz" of
# "h1️⃣ttp://x.y/z"; benchmarks/bench_cleaning.py and tests/code/test_text_cleaning.py check the rest);
# f2595b009007fd27 (before the stopwords were read without NLTK's search path and the fast stemmer
# became a subclass: same words, same stems); 06977976a14f715e (before text with emoji but no non-ASCII
# space skipped the letters regex: the same output, held to the published steps on any text by
# tests/code/test_text_cleaning.py and on the real file by benchmarks/bench_cleaning.py); 1fae1224ddaef7a6
# (before `emoji` was imported only where a text needs it: the same call, the same output).
SAME_CLEANING_AS = frozenset({"751cbb5a0f209a0a", "f2595b009007fd27", "06977976a14f715e", "1fae1224ddaef7a6"})
_LAYOUT = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}
_STOPWORDS = Path("data") / "nltk_data" / "corpora" / "stopwords" / "english"


def log_training_reviews(texts: Iterable[str]) -> None:
    """Record, in the active run, which reviews its model trained on (8 bytes each)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TRAINING_REVIEWS_ARTIFACT
        np.save(path, np.unique(review_hashes(texts)))
        mlflow.log_artifact(str(path))


def training_reviews(run_id: str) -> np.ndarray | None:
    """The review hashes a run's model trained on; None for runs logged before they were recorded."""
    if not any(f.path == TRAINING_REVIEWS_ARTIFACT for f in mlflow.MlflowClient().list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as folder:  # MLflow's own would be left in TMPDIR
        return np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TRAINING_REVIEWS_ARTIFACT,
                                                           dst_path=folder))


def log_dataset(dataset: PandasDataset, context: str) -> None:
    """Log a dataset as an input of the active run. MLflow infers its schema then, and hints that an
    integer column cannot hold missing values: our only one is the label, which is never missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.log_input(dataset, context=context)


def training_dataset(frame: pd.DataFrame, source: str, name: str | None = None) -> PandasDataset:
    """The MLflow dataset a run logs as its training input, with a digest of every row."""
    with warnings.catch_warnings():  # MLflow warns that a local CSV path could be two kinds of source: it is a file
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return from_pandas(frame, source=source, targets="label", name=name, digest=data_digest(frame))


def as_model_input(texts: Sequence[str] | pd.Series) -> pd.DataFrame:
    """The logged models' input: one string column named 'review'."""
    return pd.DataFrame({text_cleaning.TEXT_COLUMN: list(texts)})


def compact_for_saving(pipeline: Pipeline) -> Pipeline:
    """Make a fitted pipeline cheap to save: skops writes each numpy-int vocabulary index as its
    own file (3,500 terms: 3 MB, 0.3 s to dump, 0.3 s to load), plain ints go into its JSON; and
    the TF-IDF's record of discarded terms is documented as safe to remove."""
    tfidf = pipeline.named_steps["tfidf"]
    tfidf.vocabulary_ = {term: int(index) for term, index in tfidf.vocabulary_.items()}
    if hasattr(tfidf, "stop_words_"):
        del tfidf.stop_words_
    return pipeline


def model_size_bytes(model_info: ModelInfo) -> int:
    """Bytes of the logged model's files, as the artifact store holds them."""
    files = mlflow.artifacts.list_artifacts(artifact_uri=model_info.model_uri)
    return sum(f.file_size or 0 for f in files if not f.is_dir)  # MLflow types file_size as optional


def cleaning_digest(root: Path = Path(text_cleaning.__file__).parent) -> str:
    """A digest of the cleaning a model runs: the code of `text_cleaning.py` (its tokens: comments,
    blank lines and layout do not count, so editing a comment does not disown every model) and its
    stopword list, as laid out under `root` (this checkout, or a logged model's `code/` folder)."""
    digest = hashlib.sha256()
    with (root / "text_cleaning.py").open("rb") as code:
        for token in tokenize.tokenize(code.readline):
            if token.type not in _LAYOUT:
                digest.update(f"{tokenize.tok_name[token.type]}:{token.string.strip()}\n".encode())
    digest.update((root / _STOPWORDS).read_bytes())
    return digest.hexdigest()[:16]


def log_training_records(pipeline: Pipeline, reviews: Reviews, split: Split, held_texts: Sequence[str],
                         seed: int = 0, clean: Callable[[list[str]], list[str]] = text_cleaning.clean_texts) -> None:
    """Log what later stages need of a fresh model's training: the reviews it trained on (promotion leaves
    them out) and its reference profile (monitoring compares against it; `held_texts`: the rows of the
    file its lineage holds out, repeats included). The tuning run and the retrain both log through here,
    so their versions carry the same records; the model itself is logged by `publication.publish`."""
    log_training_reviews(split.X_train)
    mlflow.log_dict(reference_profile(pipeline, reviews.usable_text, split.y_train, held_texts, seed,
                                      clean).to_dict(), PROFILE_ARTIFACT)


@contextmanager
def _cleaning_code() -> Iterator[list[str]]:
    """text_cleaning.py and its stopword data, laid out as in the project so the copy finds it."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(text_cleaning.NLTK_DATA_DIR, data_dir / text_cleaning.NLTK_DATA_DIR.name)
        yield [text_cleaning.__file__, str(data_dir)]


def log_sentiment_model(pipeline: Pipeline, example_texts: Sequence[str], run_id: str | None = None) -> ModelInfo:
    """Log a raw-text pipeline to the run (default: the active one) so pyfunc can load it anywhere, offline."""
    with _cleaning_code() as code_paths:
        return mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_ARTIFACT,
            signature=SIGNATURE,
            input_example=as_model_input(example_texts),
            code_paths=code_paths,
            pip_requirements=[f"{pkg}=={version(pkg)}" for pkg in _REQUIREMENTS],
            serialization_format="skops",
            skops_trusted_types=list(TRUSTED_TYPES),
            run_id=run_id,  # passed on to mlflow.models.Model.log
        )
