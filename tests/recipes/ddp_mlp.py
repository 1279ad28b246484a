"""The tiny recipe trained with DistributedDataParallel over gloo (each rank on its shard)."""

import torch
import torch.distributed as dist
from torch import nn

from tests.recipes.tiny_mlp import recipe as tiny


def recipe():
    base = tiny()
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 1.5
    y = torch.randint(0, 4, (512,), generator=g)
    x = centers[y] + torch.randn(512, 16, generator=g)
    shard_x, shard_y = x[rank::world], y[rank::world]

    def train(model, epochs):
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        for _ in range(epochs):
            for i in range(0, len(shard_x), 32):
                opt.zero_grad()
                nn.functional.cross_entropy(ddp(shard_x[i:i + 32]), shard_y[i:i + 32]).backward()
                opt.step()

    base.train = train
    return base
