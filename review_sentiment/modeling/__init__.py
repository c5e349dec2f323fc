"""Modeling: the model families and their sklearn pipelines, the metric, and the linear maths that
scoring, explaining and serving share."""
