"""One module per job, each with one public ``run(spark, cfg, ...) -> Result``, and the
terminal summaries.

``jobs/<name>.py`` calls them through ``segmentation.runtime.cli``; ``summaries`` turns each
result into the terminal summary; ``records``, ``train_records`` and ``attitude_records`` hold
what the trainings record in MLflow and write. Imports: every stage below; nothing imports a
workflow except another workflow, the summaries and the jobs.
"""
