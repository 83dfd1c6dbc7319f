"""Distillation losses: one module per loss, holding its recipe config and its ``nn.Module``.

A loss module defines a config (a :class:`~edgekd.distill.losses.base.WeightedLoss` with a ``kind``
tag and the ``needs`` it compares beyond logits) and a
:class:`~edgekd.distill.losses.base.DistillationLoss` naming that config as its ``config_model``.
:mod:`edgekd.distill.losses.registry` lists the modules; the recipe's loss union, ``edgekd
validate``'s checks and :func:`~edgekd.distill.losses.registry.build_loss` all come from it, so a new
loss is one module plus one line there (and its test). :class:`~edgekd.distill.losses.combined.CombinedLoss`
adds weighted losses. Losses comparing hidden states of different widths own a learned projection:
give the loss's ``parameters()`` to the optimizer together with the student's.
"""
