"""The version of edgekd (recorded in every run, stage and report)."""

__version__ = "0.1.0"
