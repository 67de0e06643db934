"""Training steps with the fused (compiled) element-wise chains against the same chains run eagerly,
alternated step by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower
minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/fused_ab.py                                   # every fused chain
    .venv/bin/python benchmarks/fused_ab.py --chains _profile_values _expected_counts _zero_term

Each stage's steps alternate between the chains named by ``--chains`` (the functions wrapped by
``cellsynth.data.fused.Fused``; default: all of them) compiled and run eagerly (``alternation.py``);
both stages' steps are timed (``--ae-epochs`` autoencoder epochs, then ``--epochs`` generator epochs,
validation off, two torch threads), the first ten of each stage left out. Prints one line per stage:
``RESULT stage=<autoencoder|gan> fused_ms=<median> eager_ms=<median>``.
"""

from __future__ import annotations

import argparse

from alternation import alternate, baron, fit_nbgan, medians_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12, help="generator epochs")
    ap.add_argument("--ae-epochs", type=int, default=12, help="autoencoder epochs")
    ap.add_argument("--chains", nargs="*", default=None, help="names of the fused functions run eagerly")
    args = ap.parse_args()
    data = baron()
    from cellsynth.data.fused import Fused
    from cellsynth.train.adversarial import AdversarialPlan
    from cellsynth.train.likelihood import LikelihoodPlan

    fused_call, eager = Fused.__call__, {"on": False}

    def call(self, *a, **kw):
        if eager["on"] and (args.chains is None or self.fn.__name__ in args.chains):
            return self.fn(*a, **kw)
        return fused_call(self, *a, **kw)

    Fused.__call__ = call

    def switch(plan, kind):  # noqa: ARG001
        eager["on"] = kind == "eager"
        return lambda: eager.update(on=False)

    times = {stage: alternate(plan, ("fused", "eager"), switch)
             for stage, plan in (("autoencoder", LikelihoodPlan), ("gan", AdversarialPlan))}  # fmt: skip
    fit_nbgan(data, epochs=args.epochs, ae_epochs=args.ae_epochs)
    for stage, stage_times in times.items():
        ms = medians_ms(stage_times, 5)
        print(f"{stage}: {sum(map(len, stage_times.values()))} steps")
        print(f"RESULT stage={stage} fused_ms={ms['fused']:.1f} eager_ms={ms['eager']:.1f}")


if __name__ == "__main__":
    main()
