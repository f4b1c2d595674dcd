"""Acting on segments: audiences with consent and holdout groups, their change feed, and
campaign measurement.

Imports: ``explain`` and the layers below it.
"""
