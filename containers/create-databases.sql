-- The stack's databases, made once when the db volume is first initialised.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
CREATE DATABASE predictions;
