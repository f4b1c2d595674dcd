"""Running a job: the SparkSession factory (with Delta), the command line every job shares,
MLflow tracking, stage timings.

Belongs here: ``session`` (the one place a SparkSession is built), ``cli`` (arguments, config,
logging, clean exit codes), ``tracking`` (MLflow runs, the registry, aliases), ``timing``.
Imports: ``config`` and ``errors`` only; never a stage or a workflow.
"""
