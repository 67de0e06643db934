"""The generator step with the real cells' stored views against projecting each real batch, alternated step
by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/stored_views_ab.py

Generator steps alternate between reading the stored table (``AdversarialPlan.real_views``) and
densifying and projecting their real batch as smaller data do (``alternation.py``); both then take the
same critic and generator steps. One autoencoder epoch, ``--epochs`` generator epochs, validation off,
two torch threads; the first ten steps of each are left out. Prints
``RESULT stored_ms=<median> projected_ms=<median>``.
"""

from __future__ import annotations

import argparse

from alternation import alternated_generator_steps, baron


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="generator epochs")
    args = ap.parse_args()
    data = baron()

    def switch(plan, kind):
        table = plan.real_views
        if kind == "projected":
            plan.real_views = None

        def undo():
            plan.real_views = table

        return undo

    ms = alternated_generator_steps(data, ("stored", "projected"), switch, epochs=args.epochs, skip=10)
    print(f"RESULT stored_ms={ms['stored']:.1f} projected_ms={ms['projected']:.1f}")


if __name__ == "__main__":
    main()
