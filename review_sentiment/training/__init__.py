"""Training: the Optuna study for one family, a run's reports and plots, and the tuning run end to end."""
