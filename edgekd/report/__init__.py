"""Reports: the JSON record of a run, its Markdown and HTML renderings, plots, and CPU benchmark reports.

Computes no metric of its own: everything comes from the stages' records (or the profiler, for ``bench``).
"""
