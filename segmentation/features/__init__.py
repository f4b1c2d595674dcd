"""The spaces customers are clustered in: behavioural features as of a date, the attitudinal
space (factor analysis of survey items) and the scaling both share.

Belongs here: ``behaviour`` (per-customer features from the events, Spark built-ins, one pass),
``factors`` (exploratory factor analysis: correlations in Spark, extraction and rotation on the
driver), ``attitude_space`` (imputation, encoding, factor scores and block weights as SQL),
``scaling`` (skew transforms and standard scaling as one SQL stage).
Imports: ``identity``, ``inputs`` and the layers below them.
"""
