"""Wang, Zhu, Torralba & Efros (2018), "Dataset distillation": learn the set through the training it drives.

Each outer iteration draws a randomly initialised network, trains it ``inner_steps`` gradient steps on
the synthetic set as pure functions of the parameters (``torch.func.functional_call``, graph kept),
and scores the result on a real batch (batch norm in eval mode, with the statistics the synthetic
batches left, as a model trained on the set is tested); that loss is differentiated back through the unrolled steps
to the synthetic images, the per-step learning rates (learned, in log space) and, with
``labels: learned``, the soft labels (Sucholutsky & Schonlau 2021).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from edgekd.dataset_distill.augment import augment
from edgekd.dataset_distill.problem import Problem, SyntheticSet


def learn(problem: Problem) -> SyntheticSet:
    """Learn the synthetic set (and step sizes, and soft labels if asked) by differentiating unrolled training."""
    config = problem.config
    generator, images = problem.start()
    labels = problem.synthetic_labels()
    log_lrs = torch.full((config.inner_steps,), math.log(config.inner_lr), requires_grad=True)
    label_logits = (F.one_hot(labels, problem.num_classes).float() * 3.0).requires_grad_(config.labels == "learned")
    learnable = [images, log_lrs] + ([label_logits] if config.labels == "learned" else [])
    optimizer = torch.optim.Adam(learnable, lr=config.image_lr)
    losses: list[float] = []
    for _ in range(config.iterations):
        network = problem.family.build().train()
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # running statistics: the average over the inner steps' synthetic batches
        params = {name: p.detach().requires_grad_(True) for name, p in network.named_parameters()}
        buffers = {name: b.clone() for name, b in network.named_buffers()}
        targets = F.softmax(label_logits, dim=1)
        for step in range(config.inner_steps):
            logits = functional_call(network, (params, buffers), (augment(images, config.augment, generator),))
            inner_loss = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
            grads = torch.autograd.grad(inner_loss, list(params.values()), create_graph=True)
            params = {name: p - log_lrs[step].exp() * g for (name, p), g in zip(params.items(), grads, strict=True)}
        index = torch.randint(len(problem.labels), (config.batch_real * problem.num_classes,), generator=generator)
        network.eval()  # real data is scored as at test time: with the statistics training on the set left
        real_logits = functional_call(network, (params, buffers), (problem.images[index],))
        loss = F.cross_entropy(real_logits, problem.labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        problem.clamp_(images)
        losses.append(loss.item())
    soft = F.softmax(label_logits, dim=1).detach() if config.labels == "learned" else None
    return SyntheticSet(images.detach(), labels, soft,
                        details={"final_loss": losses[-1], "first_loss": losses[0],
                                 "step_sizes": [round(v, 6) for v in log_lrs.exp().tolist()]})
