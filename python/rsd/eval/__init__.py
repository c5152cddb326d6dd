"""Evaluation: data sets, metrics, the grid runner (``rsd eval``) and the seed figure (``rsd plot``)."""
