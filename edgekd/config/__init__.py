"""Configuration shared by every part of edgekd: base types, YAML loading with one-line errors, device profiles.

Each stage's own schema lives beside the stage (``edgekd/<stage>/config.py``); the recipe that ties them
together is :mod:`edgekd.config.recipe`. Nothing here runs anything or imports an ML library.
"""
