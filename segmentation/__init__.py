"""Distributed customer segmentation on Apache Spark.

One package per stage of the journey from the user's events to the tables, imports running one
way (``tests/test_layers.py`` checks it): ``workflows`` -> ``activation`` -> ``explain`` ->
``value`` -> ``modeling`` -> ``features`` -> ``identity`` -> ``inputs`` -> ``sample`` ->
``storage`` -> ``runtime`` -> ``config`` -> ``errors``. Each package's docstring says what
belongs in it.
"""

__version__ = "0.1.0"
