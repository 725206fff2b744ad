"""Anomaly models for grey failures. Only names here: importing the package must stay cheap
(the CLI lists the estimators without loading scikit-learn)."""

#: What `sentinel anomaly evaluate --estimator` accepts: sentinel's score and the baselines.
ESTIMATORS = ("combined", "zscore", "pca", "iforest", "knn")
