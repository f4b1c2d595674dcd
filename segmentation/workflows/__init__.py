"""One module per job, each with one public ``run(spark, cfg, ...) -> Result``.

``jobs/<name>.py`` calls them through ``segmentation.cli``; ``summaries`` turns each result
into the terminal summary.
"""
