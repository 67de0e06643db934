"""Progress: a tqdm bar on a terminal, a few plain lines in a log, nothing when switched off."""

from __future__ import annotations

import io

from cellsynth.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_many_rapid_updates_in_a_log_write_a_line_or_two_ending_with_the_count():
    log = io.StringIO()
    with Progress(total=5000, desc="training", unit="epoch", stream=log) as bar:
        for i in range(5000):
            bar.set_postfix(loss=i / 7)
            bar.update(1)
    text = log.getvalue()
    lines = text.splitlines()
    assert 1 <= len(lines) <= 2
    assert "\r" not in text
    assert lines[-1].startswith("training: 5000/5000 epoch (100%)")
    assert "loss=714.1" in lines[-1]  # the last postfix: 4999 / 7


def test_off_a_terminal_one_line_per_interval_with_rate_and_eta():
    log, clock = io.StringIO(), FakeClock()
    bar = Progress(total=100, desc="GAT", unit="epoch", stream=log, interval=10, clock=clock)
    for _ in range(50):  # one epoch every second: a line every 10 epochs
        clock.now += 1.0
        bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[0] == "GAT: 10/100 epoch (10%) [10s, 1 epoch/s, ETA 1m30s]"
    assert lines[-1].startswith("GAT: 50/100 epoch (50%)")
    bar.close()  # the last line already shows 50: nothing new to say
    assert len(log.getvalue().splitlines()) == 5
    bar.update(1)  # closed: ignored
    assert len(log.getvalue().splitlines()) == 5


def test_unknown_total_shows_a_rate_and_slow_steps_in_seconds_per_unit():
    log, clock = io.StringIO(), FakeClock()
    with Progress(desc="training", unit="epoch", stream=log, interval=30, clock=clock) as bar:
        for _ in range(3):
            clock.now += 20.0
            bar.set_status("best mmd 0.12")
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines == [
        "training: 2 epoch [40s, 20 s/epoch] best mmd 0.12",
        "training: 3 epoch [1m00s, 20 s/epoch] best mmd 0.12",
    ]
    assert "ETA" not in log.getvalue() and "%" not in log.getvalue()


def test_on_a_terminal_it_is_a_tqdm_bar():
    from tqdm import tqdm

    term = Terminal()
    with Progress(total=20, desc="GAT", unit="epoch", stream=term) as bar:
        assert bar.redraws and isinstance(bar._bar, tqdm)
        for _ in range(20):
            bar.set_postfix(loss=0.5)
            bar.update(1)
    text = term.getvalue()
    assert "\r" in text and "GAT" in text


def test_in_a_jupyter_kernel_the_default_stream_gets_a_bar(monkeypatch):
    import sys
    import types

    shell = types.SimpleNamespace(kernel=object(), config={})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a kernel's stderr is no terminal
    with Progress(total=3, desc="x") as bar:
        assert bar.redraws
    assert not Progress(total=3, stream=io.StringIO(), enabled=True).redraws  # an explicit file: lines


def test_disabled_writes_nothing():
    for stream in (io.StringIO(), Terminal()):
        with Progress(total=10, desc="x", stream=stream, enabled=False, interval=0) as bar:
            bar.set_postfix(a=1)
            bar.update(10)
        assert stream.getvalue() == "" and not bar.redraws


def test_gat_training_in_a_log_writes_plain_lines(capsys):
    """The GAT stage reports through Progress: under pytest stderr is not a terminal."""
    import numpy as np
    import torch

    from cellsynth.seeding.attention import train_gat_scores

    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1], 20)
    features = rng.normal(size=(40, 4)) + codes[:, None]
    src = np.arange(40)
    edges = torch.as_tensor(np.stack([src, (src + 1) % 40]), dtype=torch.int64)
    train_gat_scores(features, edges, codes, hidden=4, heads=1, max_epochs=5, patience=100, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("GAT: 5/5 epoch (100%)")  # patience beyond max_epochs: a total
    train_gat_scores(features, edges, codes, hidden=4, heads=1, max_epochs=50, patience=3, progress=True)
    last = capsys.readouterr().err.splitlines()[-1]  # early stopping can end it sooner: a count and a rate
    assert last.startswith("GAT: ") and "/50" not in last and ("epoch/s" in last or "s/epoch" in last)
