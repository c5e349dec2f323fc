# One image for every role of the pipeline: tuning, the Prefect schedules, the prediction service, and
# the MLflow and Prefect servers (both ship with the project's requirements).
#   docker build -t review-sentiment .            (podman build … the same)
# BASE_IMAGE: any Debian-like image with Python ≥ 3.11 and its venv module.
# No HEALTHCHECK here: one image runs five roles, and compose.yaml gives each role its own check
# (a check baked in for the API would call the scheduler unhealthy).
ARG BASE_IMAGE=python:3.12-slim

# Stage 1: the dependencies in a venv — minutes, rebuilt only when requirements.txt changes.
FROM ${BASE_IMAGE} AS dependencies
# A proxy's CA for pip, only where the build host needs one: the path reaches RUN as an environment
# variable (and shows in the image's history: a path, never a secret); the file is mounted for the build.
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Stage 2: the project on top of it — seconds. Built FROM the first stage rather than copying its venv:
# every dependency is a wheel, so stage 1 holds nothing build-only to leave behind, and copying the
# 1 GB venv cost ~35 s per cold build.
FROM dependencies
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false GIT_PYTHON_REFRESH=quiet \
    PREFECT_HOME=/home/app/.prefect PREFECT_UI_STATIC_DIRECTORY=/home/app/.prefect/ui \
    REVIEW_SENTIMENT_PREDICTION_LOG=/data/predictions.db
RUN useradd --create-home --uid 10001 app && mkdir /data && chown app /data
WORKDIR /app
# The code last: a code change rebuilds these layers only.
COPY text_cleaning.py sentiment_mlflow_optuna.py ml_orchestration_flipkart.py serve_api.py stack.py ./
COPY data/nltk_data data/nltk_data
COPY data/sample_reviews.csv data/
COPY review_sentiment review_sentiment
USER app
EXPOSE 8000
CMD ["python", "serve_api.py", "--host", "0.0.0.0"]
