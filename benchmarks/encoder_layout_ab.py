"""The encoder's first layer with its weight stored transposed (``WideInputLinear``, inputs × outputs)
against ``nn.Linear``'s layout (outputs × inputs), alternated step by step inside one nbgan fit on Baron
mouse pancreas (one process: the host's slower minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/encoder_layout_ab.py

Autoencoder steps alternate (``alternation.py``) between computing the layer as the model does
(``addmm``) with a copy of its weight in the transposed layout and as ``F.linear`` with a copy in
``nn.Linear``'s layout: both copies are
made once, are tensors the optimiser does not see (so neither kind of step pays for the layer's Adam
update) and have their gradients dropped after each step. ``--ae-epochs`` autoencoder epochs,
validation off, two torch threads, the first five steps of each kind left out. Prints
``RESULT stage=autoencoder transposed_ms=<median> linear_ms=<median>``.
"""

from __future__ import annotations

import argparse

from alternation import alternate, baron, fit_nbgan, medians_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ae-epochs", type=int, default=14, help="autoencoder epochs")
    args = ap.parse_args()
    data = baron()
    import torch
    from torch.nn import functional as F

    from cellsynth.nn.blocks import WideInputLinear
    from cellsynth.train.likelihood import LikelihoodPlan

    linear = {"on": False}
    copies: list[torch.Tensor] = []

    def forward(self, x):
        if not hasattr(self, "copies"):
            self.copies = [self.weight_t.detach().clone(), self.weight_t.detach().t().contiguous()]
            copies.extend(w.requires_grad_(True) for w in self.copies)
        if linear["on"]:
            return F.linear(x, self.copies[1], self.bias)
        return torch.addmm(self.bias, x, self.copies[0])

    WideInputLinear.forward = forward

    def switch(plan, kind):  # noqa: ARG001
        linear["on"] = kind == "linear"

        def undo():
            linear["on"] = False
            for w in copies:
                w.grad = None

        return undo

    times = alternate(LikelihoodPlan, ("transposed", "linear"), switch)
    fit_nbgan(data, epochs=1, ae_epochs=args.ae_epochs)
    ms = medians_ms(times, 5)
    print(f"autoencoder: {sum(map(len, times.values()))} steps")
    print(f"RESULT stage=autoencoder transposed_ms={ms['transposed']:.1f} linear_ms={ms['linear']:.1f}")


if __name__ == "__main__":
    main()
