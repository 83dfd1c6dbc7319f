"""Budget-driven search: the most accurate student that fits a device's budget, found by measuring.

- :mod:`edgekd.search.space`: the candidate grid (structures × precisions) around the recipe's student
- :mod:`edgekd.search.build`: candidates with random weights, exported for timing
- :mod:`edgekd.search.table`: the latency table and its cache
- :mod:`edgekd.search.plan`: the table judged against the budget; feasible structures ranked
- :mod:`edgekd.search.messages`: what to say when nothing fits
- :mod:`edgekd.search.train`: one pipeline run per structure trained
- :mod:`edgekd.search.select`: real exports measured, the most accurate within budget confirmed
- :mod:`edgekd.search.stage`: the ``search`` stage
- :mod:`edgekd.search.compress`: ``edgekd compress``: any recipe as a search, checked before training
- :mod:`edgekd.search.causal_lm`: the same for a causal LM (``data.source: corpus``), in ms per token, chosen by
  validation loss; its grid :mod:`edgekd.search.lm_space` and per-token table :mod:`edgekd.search.lm_table`
"""
