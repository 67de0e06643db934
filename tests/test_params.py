"""Declared hyperparameters, options refused before any data is read, sizes refused before allocating."""

from __future__ import annotations

import json
import resource
import shutil
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from cellsynth import models
from cellsynth.cli import app
from cellsynth.errors import InputError, ModelFileError, RequestError
from cellsynth.params import Param, ParamSpec, check_option

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for w in words:
        assert w in lines[0], lines[0]


# ---------------------------------------------------------------------- the spec itself
def test_unknown_parameter_names_the_model_and_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown parameter 'learning_rate' for model 'cgan'") as e:
        models.get("cgan", learning_rate=1e-3)
    assert "lr_g" in str(e.value) and "epochs" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="did you mean 'gat_k'"):
        models.get("garage", gat_kk=3)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("abc", "'abc' (text)"), (2.5, "2.5 (number)"), (True, "True (true/false)"), ([3], "[3] (list)")],
)
def test_wrong_types_are_refused_naming_value_type_and_what_is_accepted(value, shown):
    with pytest.raises(InputError) as e:
        models.get("cgan", epochs=value)
    assert str(e.value) == f"parameter 'epochs' of model 'cgan' got {shown}; it accepts an integer ≥ 1"


@pytest.mark.parametrize(
    ("name", "params", "accepts"),
    [
        ("cgan", {"lr_g": 0}, "a number > 0"),
        ("cgan", {"z_dim": 0}, "an integer in [1, 65536]"),
        ("cgan", {"g_hidden": [64, 70000]}, "a list of 1 to 16 integers in [1, 65536]"),
        ("cgan", {"g_hidden": []}, "a list of 1 to 16 integers"),
        ("cgan", {"betas": [0.5, 1.0]}, "a list of 2 numbers in [0, 1)"),
        ("cgan", {"max_minutes": -1}, "a number > 0, or null/None"),
        ("cgan", {"max_minutes": float("nan")}, "a number > 0"),
        ("garage", {"leakage": 1.5}, "a number in [0, 1]"),
        ("garage", {"gat_k": 0}, "an integer in [1, 1000]"),
    ],
)
def test_out_of_range_values_are_refused(name, params, accepts):
    with pytest.raises(InputError, match="it accepts") as e:
        models.get(name, **params)
    assert accepts in str(e.value) and repr(next(iter(params))) in str(e.value)


@pytest.mark.parametrize(
    ("params", "choices"),
    [
        ({"loss": "l2"}, "bce, wgan-gp, wgan-clip, hinge, fgan, fisher"),
        ({"optimizer": "sgd"}, "adam, rmsprop"),
        ({"count_noise": "nb"}, "poisson, pln, rounding, none"),
        ({"critic_space": "latent"}, "genes, pca"),
    ],
)
def test_values_outside_the_choices_are_refused(params, choices):
    with pytest.raises(InputError, match=f"it accepts one of {choices}"):
        models.get("cgan", **params)


def test_garage_choices_and_gat_options():
    with pytest.raises(InputError, match="one of gat, lsh, random"):
        models.get("garage", seed_method="knn")
    with pytest.raises(InputError, match="one of pca, genes"):
        models.get("garage", input_space="raw")
    assert models.get("garage", gat={"max_epochs": 3, "hidden": 16}).params["gat"] == {
        "max_epochs": 3,
        "hidden": 16,
    }
    for bad in ({"epochs": 3}, {"seed": 1}, {"device": "cuda"}):  # not an option, or set by the selection
        with pytest.raises(InputError, match="a mapping with keys among hidden, heads"):
            models.get("garage", gat=bad)


def test_values_are_coerced_to_the_declared_kind():
    m = models.get("cgan", lr_g=1, g_hidden=[32, 64], betas=[0, 0.9], epochs=3.0, max_minutes=2)
    assert m.params["lr_g"] == 1.0 and isinstance(m.params["lr_g"], float)
    assert m.params["g_hidden"] == (32, 64) and m.params["betas"] == (0.0, 0.9)
    assert m.params["epochs"] == 3 and isinstance(m.params["epochs"], int)
    assert isinstance(m.params["max_minutes"], float)
    assert models.get("cgan", max_minutes=None, grad_clip=None).params["max_minutes"] is None
    with pytest.raises(InputError, match="got None"):
        models.get("cgan", epochs=None)  # not optional


def test_defaults_come_from_the_spec_and_are_the_measured_ones():
    from cellsynth.models.cgan import CGAN
    from cellsynth.models.garage import GARAGE

    assert CGAN.default_params == CGAN.param_spec.defaults()
    assert models.get("cgan").params == CGAN.default_params
    d = CGAN.default_params
    assert (d["lr_g"], d["lr_d"], d["pack"], d["moment_weight"]) == (1e-4, 1e-4, 2, 6e-3)
    assert d["count_noise"] == "pln" and d["lr_marginal"] == 5e-3
    assert d["g_hidden"] == (256, 512) and d["init_variation"] == 64 and d["critic_space"] == "pca"
    assert d["input_space"] == "pca" and d["d_steps"] is None  # normal noise; the loss's own critic steps
    g = GARAGE.default_params
    assert {k: g[k] for k in set(g) - set(d)} == {
        "leakage": 0.2,
        "seed_method": "gat",
        "gat_k": 5,
        "rare_threshold": None,
        "min_seeds_per_type": 2,
        "gat": {},
    }
    # GARAGE is the cgan plus seeds, at three times its learning rates (the default sweep's choice)
    assert all(g[k] == d[k] for k in d if k not in ("lr_g", "lr_d"))
    assert (g["lr_g"], g["lr_d"]) == pytest.approx((3e-4, 3e-4))
    assert models.get("nbvae").params["lr"] == pytest.approx(1e-3 / 3)
    assert models.get("fishergan").params["lr_g"] == pytest.approx(1e-4 / 3)
    assert models.get("lshgan").params["lr_g"] == models.get("gan").params["lr_g"] == 1e-4


def test_every_training_setting_has_a_declared_parameter():
    """A field added to the training settings must be declared in the cgan's spec (else it is unsettable)."""
    from cellsynth.models.cgan import CGAN
    from cellsynth.train import AdversarialSettings, TrainSettings

    names = {f.name for f in (*fields(TrainSettings), *fields(AdversarialSettings))} - {"extra"}
    missing = sorted(names - set(CGAN.param_spec.names))
    assert not missing, f"training settings without a parameter spec in models/cgan.py: {missing}"
    # and the declared values reach the settings the training loop gets
    settings = models.get("cgan", patience=7, val_every_steps=9, max_minutes=1)._settings()
    assert (settings.patience, settings.val_every_steps, settings.max_minutes) == (7, 9, 1.0)


def test_a_declaration_with_a_default_it_does_not_accept_fails_at_once():
    with pytest.raises(ValueError, match="default 0"):
        Param("epochs", 0, "int", ge=1)
    with pytest.raises(ValueError, match="declared twice"):
        ParamSpec([Param("a", 1, "int"), Param("a", 2, "int")])
    spec = ParamSpec([Param("a", 1, "int"), Param("b", "x", "str")]).extend(Param("a", 2.0, "float"))
    assert spec.names == ["a", "b"] and spec.defaults() == {"a": 2.0, "b": "x"}


def test_check_option_names_the_option():
    assert check_option("--n", None, "int", ge=0) is None
    assert check_option("--n", 5, "int", ge=0) == 5
    with pytest.raises(InputError) as e:
        check_option("--max-minutes", -1.0, Param("max_minutes", None, "float", gt=0, optional=True))
    assert str(e.value) == "--max-minutes got -1.0 (number); it accepts a number > 0"


# ---------------------------------------------------------------------- command line
def test_models_params_lists_each_parameter_with_default_and_accepted_values():
    r = invoke("models", "--params", "cgan")
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("lr_g "))
    assert "0.0001" in row and "a number > 0" in row and "learning rate" in row
    losses = "one of bce, wgan-gp, wgan-clip, hinge, fgan, fisher"
    assert any(ln.startswith("loss ") and losses in ln for ln in r.stdout.splitlines())
    garage = invoke("models", "--params", "garage").stdout
    assert "leakage" in garage and "lr_g" in garage
    assert_one_line_error(invoke("models", "--params", "nope"), "unknown model 'nope'")
    assert "cgan" in invoke("models").stdout  # without --params: the models


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--param", "epochs=abc"], ["'epochs'", "'abc' (text)", "an integer ≥ 1"]),
        (["--param", "no_such=1"], ["unknown parameter 'no_such'", "known:"]),
        (["--param", "g_hidden=[0]"], ["'g_hidden'"]),
        (["--epochs", "0"], ["--epochs got 0", "an integer ≥ 1"]),
        (["--max-minutes", "-1"], ["--max-minutes got -1.0", "a number > 0"]),
        (["--n-genes", "1"], ["--n-genes got 1", "an integer ≥ 2"]),
        (["--seed", "-1"], ["--seed got -1", "in [0, 4294967296)"]),
        (["--seed", str(2**32)], ["--seed"]),
        (["--model", "garage", "--leakage", "1.5"], ["--leakage got 1.5", "in [0, 1]"]),
        (["--model", "garage", "--gat-k", "0"], ["--gat-k got 0"]),
        (["--model", "garage", "--rare-threshold", "-2"], ["--rare-threshold got -2"]),
        (["--model", "nope"], ["unknown model 'nope'"]),
    ],
)
def test_fit_refuses_options_before_reading_any_data(tmp_path, args, words):
    # the data file does not exist: the option must be refused before it is looked for
    out = tmp_path / "model"
    r = invoke("fit", tmp_path / "missing.h5ad", "--out", out, *args)
    assert_one_line_error(r, *words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["sample", "{missing}", "--n", "-1", "--out", "{tmp}/s.h5ad"], ["--n got -1"]),
        (["sample", "{missing}", "--n", "5", "--seed", "-3", "--out", "{tmp}/s.h5ad"], ["--seed"]),
        (["demo", "--max-minutes", "0", "--out", "{tmp}/demo"], ["--max-minutes got 0.0"]),
        (["split", "{missing}", "--test-fraction", "1.5", "--out", "{tmp}/split"], ["--test-fraction"]),
    ],
)
def test_other_commands_refuse_impossible_options_first(tmp_path, command, words):
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in command]
    assert_one_line_error(invoke(*args), *words)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- sizes refused before allocating
def test_absurd_sample_sizes_are_refused_before_generating(fitted_cgan):
    with pytest.raises(RequestError, match=r"sampling 10,000,000,000,000 cells × \d+ genes needs about") as e:
        fitted_cgan.sample(n=10**13)
    assert "smaller --n" in str(e.value) and "different seeds" in str(e.value)
    with pytest.raises(RequestError, match="GiB"):
        fitted_cgan.sample(n=10, per_type={"alpha": 10**13})


def test_the_limit_is_the_machines_memory(fitted_cgan, monkeypatch):
    import cellsynth.models.sampling as model_module

    monkeypatch.setattr(model_module, "_physical_memory", lambda: 10_000)  # bytes
    with pytest.raises(RequestError, match="more than this machine's"):
        fitted_cgan.sample(n=100)
    monkeypatch.setattr(model_module, "_physical_memory", lambda: None)  # unknown: no limit applied
    assert fitted_cgan.sample(n=100, seed=0).n_obs == 100


def test_cli_refuses_an_absurd_n_without_writing(fitted_cgan_dir, tmp_path):
    out = tmp_path / "s.h5ad"
    r = invoke("sample", fitted_cgan_dir, "--n", 10**13, "--out", out)
    assert_one_line_error(r, "10,000,000,000,000 cells", "GiB")
    assert not out.exists()


# ---------------------------------------------------------------------- crafted model files
@pytest.fixture
def model_copy(fitted_cgan_dir, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(fitted_cgan_dir, path)
    return path


def edit_config(path, edit) -> None:
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def _set(*keys, value):
    def edit(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set("params", "z_dim", value=10**7), ["field params", "'z_dim'", "[1, 65536]"]),
        (_set("params", "loss", value="l2"), ["field params", "'loss'"]),
        (_set("params", value=[1, 2]), ["field params", "not a mapping"]),
        (_set("data", "label_key", value=7), ["data.label_key", "not text"]),
        (_set("data", "categories", "cell_type", value=lambda c: [*c[:-1], 5]), ["data.categories"]),
        (_set("data", "categories", "donor", value=lambda c: c * 60_000), ["data.categories['donor']"]),
        (_set("data", "joint", "codes", value=lambda c: [99, *c[1:]]), ["data.joint.codes", "'cell_type'"]),
        (_set("data", "joint", "counts", value=lambda c: c[:-1]), ["data.joint.codes", "entries"]),
        (_set("data", "integer_keys", value=["day"]), ["data.integer_keys", "'day'", "not a condition key"]),
        (_set("data", "integer_keys", value="cell_type"), ["data.integer_keys", "not a list"]),
        (_set("data", "bool_keys", value=["sick"]), ["data.bool_keys", "'sick'", "not a condition key"]),
        (
            _set("data", "preprocessing", "train_genes", value=lambda g: [*g[:-1], 10**6]),
            ["data.preprocessing.train_genes", "beyond"],
        ),
        (
            _set("data", "preprocessing", "output_genes", value=lambda g: ["g" * 5000, *g[1:]]),
            ["data.preprocessing.output_genes[0]", "5,000 characters"],
        ),
        (
            _set("data", "preprocessing", "library_sizes", "alpha", value=lambda v: [float("nan"), *v[1:]]),
            ["library_sizes['alpha']", "not finite"],
        ),
        (
            _set("data", "preprocessing", "library_sizes", "rare", value=lambda v: ["3", *v[1:]]),
            ["library_sizes['rare']", "not a number"],
        ),
        (_set("data", "preprocessing", "representation", value="raw"), ["representation"]),
        (_set("data", "n_train_cells", value=-5), ["data.n_train_cells"]),
        (_set("format_version", value="1"), ["format_version"]),
    ],
)
def test_crafted_configs_are_refused_naming_the_field(model_copy, edit, words):
    edit_config(model_copy, edit)
    with pytest.raises(ModelFileError) as e:
        models.load(model_copy)
    message = str(e.value)
    assert "\n" not in message and "config.json" in message
    for w in words:
        assert w in message, message


def test_a_config_describing_huge_networks_allocates_nothing(model_copy):
    # 30,000 × 30,000 float32 weights would be 3.6 GB; the config is checked against the weights' header
    edit_config(model_copy, _set("params", "g_hidden", value=[30_000, 30_000]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFileError, match=r"shape \(\d+,\) in the weights but \(30000,\) by the config"):
        models.load(model_copy)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000


def test_a_valid_copy_loads_and_the_cli_reports_a_crafted_one_on_one_line(model_copy, tmp_path):
    assert models.load(model_copy).sample(n=5, seed=0).n_obs == 5
    edit_config(model_copy, _set("data", "preprocessing", "train_genes", value=lambda g: [*g, 10**6]))
    r = invoke("sample", model_copy, "--n", 5, "--out", tmp_path / "s.h5ad")
    assert_one_line_error(r, "train_genes")
    assert not (tmp_path / "s.h5ad").exists()
