"""A method of your own in panda's ROIR benchmark: one registration, then `panda bench roir` compares it.

    panda bench roir --methods-from examples/roir_my_method.py --method PandA --method "Random z" --n 200

The benchmark asks a method for candidate edits for a region (eyes, nose or mouth) of a set of faces; it chooses,
on calibration faces, the candidate and sign whose change at a matched pixel magnitude inside the region is most
local, and reports that edit's ROIR on the test faces beside every other method's. This one proposes random
directions in the latent z, the floor any real method should clear. Replace ``setup`` and ``propose`` with yours.
"""

import torch

from panda import Latents
from panda.methods import Candidate, Method, register_method

#: How many random directions to propose per region (the benchmark's --budget caps it).
DIRECTIONS = 16


def unavailable(generator):
    """Why this method cannot run on ``generator`` (a string), or None when it can: here, any generator."""
    return None


def setup(ctx):
    """Train once per generator: (state for ``propose``, seconds it took). ctx: panda.methods.BenchContext."""
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(DIRECTIONS, ctx.generator.latent_dim, generator=g)
    return directions / directions.norm(dim=1, keepdim=True), 0.0


def propose(directions, ctx, region, faces):
    """Candidate edits for ``region`` on ``faces`` (a panda.landmarks.FaceSet): each a label and
    ``apply(latents, alpha, rows) -> images`` in the generator's range (rows: which faces of the set these are)."""
    def apply(latents, alpha, rows, d):
        z = latents.z + alpha * 3.0 * d.to(latents.z)  # alpha 1: three units along the direction (z, not W)
        return ctx.generator.synthesize(Latents(z, latents.labels))

    return [Candidate(f"random z {i}", lambda lat, a, rows, d=d: apply(lat, a, rows, d))
            for i, d in enumerate(directions[:ctx.budget])]


def settings(options):
    """How it was run, for the table's settings line (options: the run's budget, layer, n_train, ...)."""
    return f"with {min(DIRECTIONS, options['budget'])} random unit directions in z"


register_method(Method("Random z", unavailable, setup, propose, settings=settings))
