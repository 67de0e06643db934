"""Generator steps with the training step's wide-batch paths on against the same steps with them off,
alternated step by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower
minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/step_paths_ab.py                        # both paths
    .venv/bin/python benchmarks/step_paths_ab.py --paths draw           # the count draw by inversion alone
    .venv/bin/python benchmarks/step_paths_ab.py --paths moment         # the moment match's closed form alone

The paths: ``draw``, the training batch's Poisson counts by inversion of a uniform
(``cellsynth.data.draws.poisson(..., by_inversion=True)``; off: torch's sampler split over the threads);
``moment``, the moment match's per-gene gradient in closed form (``cellsynth.train.objectives``; off:
autograd through ``per_gene_path``). One autoencoder epoch, then ``--epochs`` generator epochs,
validation off, two torch threads; the first ten generator steps left out. Prints
``RESULT paths=<names> on_ms=<median> off_ms=<median>``.
"""

from __future__ import annotations

import argparse

from alternation import alternated_generator_steps, baron


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=16, help="generator epochs")
    ap.add_argument("--paths", nargs="+", default=["draw", "moment"], choices=("draw", "moment"))
    args = ap.parse_args()
    data = baron()
    from cellsynth.data import draws
    from cellsynth.train import objectives

    on = {"now": True}
    if "draw" in args.paths:
        poisson = draws.poisson

        def draw(rate, generator=None, *, by_inversion=False):
            return poisson(rate, generator, by_inversion=by_inversion and on["now"])

        draws.poisson = draw
    if "moment" in args.paths:
        closed_form = objectives._closed_form
        objectives._closed_form = lambda x, w: on["now"] and closed_form(x, w)

    def switch(plan, kind):  # noqa: ARG001
        on["now"] = kind == "on"
        return lambda: on.update(now=True)

    ms = alternated_generator_steps(data, ("on", "off"), switch, epochs=args.epochs, skip=5)
    print(f"RESULT paths={','.join(args.paths)} on_ms={ms['on']:.1f} off_ms={ms['off']:.1f}")


if __name__ == "__main__":
    main()
