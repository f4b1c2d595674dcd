"""Reading and checking the user's data: events, customers, survey answers.

Belongs here: ``sources`` (paths, formats, the column mapping, one canonical schema),
``parsing`` (ids, numbers and times, with Spark built-ins), ``quality`` (row-level rules:
every unusable event quarantined with a reason, duplicates), ``customers`` (the customers
dimension and how much of a job's customers it holds), ``survey`` (Likert items checked and
cleaned before the factor analysis).
Imports: ``sample``, ``storage``, ``runtime``, ``config`` and ``errors``.
"""
