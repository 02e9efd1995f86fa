"""The single-process reference for data-parallel training: both ranks' micro-batches here, gradients averaged."""

from curate.train.loop import Trainer


def averaged_in_one_process(recipe, run_dir, steps):
    """Both ranks' micro-batches computed here, gradients averaged by hand, then one update each: what two
    workers with correct gradient averaging must equal."""
    ranks = [Trainer(recipe, run_dir / f"rank{r}", rank=r, world_size=2) for r in range(2)]
    streams = [t.batches() for t in ranks]
    for t in ranks:
        t.model.train()
    for _ in range(steps):
        for t, stream in zip(ranks, streams):
            t.backward(stream)
        for p0, p1 in zip(ranks[0].trainable.values(), ranks[1].trainable.values()):
            mean = (p0.grad + p1.grad) / 2
            p0.grad, p1.grad = mean.clone(), mean.clone()
        for t in ranks:
            t.update()
    return ranks[0]
