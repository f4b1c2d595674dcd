"""The bundled sample data: event histories, customers and survey answers with planted truth.

Belongs here: ``generator`` (events and customers with planted behavioural archetypes, all
computed on the executors from ``spark.range``), ``survey_generator`` (survey answers with
planted attitudinal segments and loadings). Nothing here reads the user's data.
Imports: ``storage``, ``runtime``, ``config`` and ``errors`` only.
"""
