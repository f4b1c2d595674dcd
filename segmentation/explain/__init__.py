"""Explaining segments: profiles and names, decision-tree rules, composition, pictures and the
HTML report.

Belongs here: ``profiling`` (profiles in original units, deterministic names), ``rules``
(decision-tree rules per segment), ``composition`` (attributes per segment, sensitive ones
flagged), ``pictures`` (PNG), ``report`` (one self-contained HTML page), ``model_report``
(what explains a trained model and where it goes: MLflow, a file beside the tables).
Imports: ``value``, ``modeling`` and the layers below them.
"""
