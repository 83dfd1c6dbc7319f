"""Zhao, Mopuri & Bilen (2021), "Dataset condensation with gradient matching" (DC).

For each of ``iterations`` randomly initialised networks, ``outer_loop`` times: class by class, the
gradient of the loss on a real batch and on the synthetic images of that class are compared layer
by layer (the paper's distance: per output unit, one minus the cosine of the two gradients, summed;
biases and norm parameters are left out) and the synthetic images move to close the gap; between
updates the network takes ``inner_loop`` SGD steps on the synthetic set, so matching follows the
trajectory a model trained on it would take.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.dataset_distill.augment import augment
from edgekd.dataset_distill.network import calibrate_batch_norm
from edgekd.dataset_distill.problem import Problem, SyntheticSet


def gradient_distance(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """DC's layer-wise distance: Σ over output units of 1 − cos(real, synthetic); 0 for 1-D parameters."""
    if real.dim() == 1:
        return real.new_zeros(())
    real, synthetic = real.flatten(1), synthetic.flatten(1)
    cosine = (real * synthetic).sum(1) / (real.norm(dim=1) * synthetic.norm(dim=1) + 1e-6)
    return (1 - cosine).sum()


def learn(problem: Problem) -> SyntheticSet:
    """Learn the synthetic set by matching per-class training gradients over many random networks."""
    config = problem.config
    generator, images = problem.start()
    labels = problem.synthetic_labels()
    optimizer = torch.optim.Adam([images], lr=config.image_lr)
    per_class = config.images_per_class
    losses: list[float] = []
    for _ in range(config.iterations):
        network = problem.family.build()
        params = list(network.parameters())
        network_optimizer = torch.optim.SGD(params, lr=config.inner_lr)
        for outer in range(config.outer_loop):
            real = [problem.class_batch(c, config.batch_real, generator) for c in range(problem.num_classes)]
            calibrate_batch_norm(network, network, torch.cat(real))
            loss = images.new_zeros(())
            for cls, batch in enumerate(real):
                target = torch.full((len(batch),), cls)
                real_loss = F.cross_entropy(network(augment(batch, config.augment, generator)), target)
                real_grads = [g.detach() for g in torch.autograd.grad(real_loss, params)]
                synthetic = images[cls * per_class:(cls + 1) * per_class]
                synthetic_loss = F.cross_entropy(network(augment(synthetic, config.augment, generator)),
                                                 torch.full((per_class,), cls))
                synthetic_grads = torch.autograd.grad(synthetic_loss, params, create_graph=True)
                loss = loss + sum(gradient_distance(r, s) for r, s in zip(real_grads, synthetic_grads, strict=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            problem.clamp_(images)
            losses.append(loss.item())
            if outer == config.outer_loop - 1:
                break
            network.train()
            fixed = images.detach()
            for _ in range(config.inner_loop):
                network_loss = F.cross_entropy(network(augment(fixed, config.augment, generator)), labels)
                network_optimizer.zero_grad()
                network_loss.backward()
                network_optimizer.step()
    return SyntheticSet(images.detach(), labels, details={"final_loss": losses[-1], "first_loss": losses[0]})
