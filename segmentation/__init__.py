"""Distributed customer segmentation on Apache Spark."""

__version__ = "0.1.0"
