"""Zhao & Bilen (2023), "Dataset condensation with distribution matching" (DM).

Each iteration draws a randomly initialised network of the family and moves the synthetic images so
that, class by class, their mean embedding (the network's penultimate features, under differentiable
augmentation) matches the mean embedding of a batch of real images of that class. No network is
trained, so it is fast and scales with the number of classes and iterations only.
"""

from __future__ import annotations

import torch

from edgekd.dataset_distill.augment import augment
from edgekd.dataset_distill.network import calibrate_batch_norm, embedder
from edgekd.dataset_distill.problem import Problem, SyntheticSet


def learn(problem: Problem) -> SyntheticSet:
    """Learn the synthetic set by matching class-mean embeddings under random networks."""
    config = problem.config
    generator, images = problem.start()
    optimizer = torch.optim.Adam([images], lr=config.image_lr)
    per_class = config.images_per_class
    losses: list[float] = []
    for _ in range(config.iterations):
        network = problem.family.build()
        for param in network.parameters():
            param.requires_grad_(False)
        real = [problem.class_batch(c, config.batch_real, generator) for c in range(problem.num_classes)]
        real_images = augment(torch.cat(real), config.augment, generator)
        embed = embedder(network)
        real_embedding = calibrate_batch_norm(network, embed, real_images)
        synthetic_embedding = embed(augment(images, config.augment, generator))
        loss = images.new_zeros(())
        start = 0
        for cls, batch in enumerate(real):
            real_mean = real_embedding[start:start + len(batch)].mean(0)
            synthetic_mean = synthetic_embedding[cls * per_class:(cls + 1) * per_class].mean(0)
            loss = loss + ((real_mean - synthetic_mean) ** 2).sum()
            start += len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        problem.clamp_(images)
        losses.append(loss.item())
    return SyntheticSet(images.detach(), problem.synthetic_labels(),
                        details={"final_loss": losses[-1], "first_loss": losses[0]})
