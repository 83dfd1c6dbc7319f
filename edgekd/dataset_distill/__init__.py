"""Dataset distillation: a few learnt examples per class that train a model almost as well as the full set.

Methods (:mod:`~edgekd.dataset_distill.methods`): Wang et al.'s meta-learning, Zhao et al.'s gradient
matching (DC) and distribution matching (DM). Judged by training fresh models on the set
(:mod:`~edgekd.dataset_distill.evaluate`) against random real subsets, a coreset and the full set.
"""
