"""Names that more than one stage must agree on: change one here and every stage follows.

The registry's model name and aliases, the label names, the MLflow experiments, the columns of the
Flipkart export, the bundled sample and the artifact that carries a tuned model's parameters.
"""
from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
SAMPLE_DATA = PROJECT_DIR / "data" / "sample_reviews.csv"
DEFAULT_TEXT_COL = "Review text"
DEFAULT_RATING_COL = "Ratings"

FAMILY_NAMES = ("LogisticRegression", "NaiveBayes", "LinearSVM")  # modeling.families defines each, in this order

LABEL_NAMES = ("negative", "positive")  # index = label id: ratings 1–2 → 0, 3–5 → 1

MODEL_NAME = "FlipkartSentimentModel"
CHAMPION = "champion"  # the alias of the served model; also the name of the variant that answers with it
CHALLENGER = "challenger"  # the alias the prediction service sends a share of traffic to
DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{CHAMPION}"

RETRAIN_FLOW = "Flipkart Sentiment Analysis Flow (Logistic)"  # the Prefect flows' names
MONITORING_FLOW = "flipkart-sentiment-monitoring"

TUNING_EXPERIMENT = "FLIPKART_SENTIMENT_ANALYSIS"
RETRAIN_EXPERIMENT = "FLIPKART_SENTIMENT_ORCHESTRATION"
SCORING_EXPERIMENT = "FLIPKART_SENTIMENT_SCORING"
MONITORING_EXPERIMENT = "FLIPKART_SENTIMENT_MONITORING"

MONITORING_STATUS_TAG = "monitoring_status"  # on a version: its latest check's status (the service exports it)

BEST_PARAMS_ARTIFACT = "best_params.json"  # the tuning run writes it, the scheduled retrain reads it

DEFAULT_PREDICTION_LOG = Path("predictions.db")  # in the working folder: the service writes it, reports read it
PREDICTION_LOG_ENV = "REVIEW_SENTIMENT_PREDICTION_LOG"  # overrides it: a PostgreSQL URL that replicas share
LOCK_URL_ENV = "REVIEW_SENTIMENT_LOCK_URL"  # the PostgreSQL database alias moves lock on, beside a tracking server
TRACKING_DB_ENV = "REVIEW_SENTIMENT_TRACKING_DB"  # a tracking server's own database: child runs go straight in
# MLflow in every process the project runs (or a work pool's worker runs for it): no link printed per run (a
# tracking server would link every trial), no telemetry (MLflow 3 fetches a config and posts usage from every
# process that tracks: nothing here reaches for the network at run time). Values already set win.
QUIET_MLFLOW_ENV = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
API_KEY_ENV = "REVIEW_SENTIMENT_API_KEY"  # the service's API key, where a flag does not give it
ANONYMOUS = "anonymous"  # who gave a fed-back label, when the service had no API key to tell
