"""Segmentations: clustering, choosing k, validating, keeping ids stable, rule-based segments.

Belongs here: ``clustering`` (the fitted Spark pipeline), ``sample_fit`` and ``model_selection``
(k chosen on a driver-side sample), ``restarts`` (the final fit on all rows), ``training`` (the
select-fit-match sequence both trainings share), ``matching`` and ``champion`` (stable ids
across retrains, the model in use), ``validation``, ``outcomes``, ``backtest`` and
``model_validation`` (is a segment real, replicable, useful), ``evaluation`` (agreement with
planted truth), ``rulesets`` (RFM segments and B2B tiers).
Imports: ``features`` and the layers below it; never ``explain`` or a workflow.
"""
