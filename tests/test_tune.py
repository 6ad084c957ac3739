"""`trainer tune`'s settings and statistics, quickly: the `tune:` section's checks (one hostile case
per input), the paired interval, the deflated Sharpe ratio and PBO, each also on data that breaks
its assumption."""

from __future__ import annotations

import numpy as np
import pytest

from trainer_core.errors import ConfigError
from trainer_core.tune.settings import check_tune, split_manifest
from trainer_core.tune.stats import (
    deflated_sharpe,
    expected_max_sharpe,
    paired_interval,
    pbo,
    probabilistic_sharpe,
    scorer,
    sharpe,
)

SPACE = {"train.learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]}}


@pytest.fixture(scope="module", autouse=True)
def _plugin_commands():
    """`trainer tune` is a plugin command: registered on the CLI as `trainer` itself does."""
    from trainer_core.cli import cli
    from trainer_core.plugins import Plugins

    Plugins.load().register_commands(cli)


def test_the_documented_section_reads():
    s = check_tune(
        {
            "trials": 20,
            "space": {
                "model.params.lstm_units": {"choice": [[32], [64, 32]]},
                "train.learning_rate": {"log_uniform": ["1.0e-4", 1.0e-2]},
                "train.batch_size": {"int": [128, 512]},
                "model.params.dropout": {"uniform": [0.0, 0.5]},
            },
            "pruner": {"asha": {"grace": 2, "max_epochs": 32, "reduction": 4}},
            "folds": 3,
            "budget": {"seconds": 3600},
            "objective": "val_loss",
        }
    )
    assert s.trials == 20 and s.folds == 3 and s.direction == "minimize"
    assert s.pruner.grace == 2 and s.pruner.max_epochs == 32 and s.pruner.reduction == 4
    assert s.budget_seconds == 3600 and s.budget_trials is None
    lr = s.dimension("train.learning_rate")
    assert lr.kind == "log_uniform" and lr.values == (1.0e-4, 1.0e-2)  # "1.0e-4" as YAML 1.1 reads it
    assert s.dimension("model.params.lstm_units").contains([64, 32])
    assert not s.dimension("train.batch_size").contains(100)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"space": SPACE, "trails": 3}, "Unknown setting tune.trails"),
        ({"space": {}}, "tune.space: expected a mapping of at least one setting"),
        ({"space": {"split.validation": {"uniform": [0.1, 0.3]}}}, "is not a setting a search can vary"),
        ({"space": {"train.lerning_rate": {"uniform": [0.1, 0.3]}}}, "train has no setting 'lerning_rate'"),
        ({"space": {"train.seed": {"int": [1, 3]}}}, "train.seed cannot be searched"),
        ({"space": {"train.learning_rate": {"normal": [0, 1]}}}, "expected one of {choice"),
        ({"space": {"train.learning_rate": {"log_uniform": [0, 0.1]}}}, "bounds > 0"),
        ({"space": {"train.learning_rate": {"uniform": [0.2, 0.1]}}}, "low < high"),
        ({"space": {"train.batch_size": {"int": [16.5, 64]}}}, "two integers"),
        ({"space": {"model.params.lstm_units": {"choice": []}}}, "a list of 1 to 100 values"),
        (
            {"space": SPACE, "pruner": {"asha": {"grace": 8, "max_epochs": 4}}},
            "grace 8 is more than max_epochs 4",
        ),
        ({"space": SPACE, "pruner": {"hyperband": {}}}, "tune.pruner: expected null"),
        ({"space": SPACE, "pruner": {"asha": {"rungs": 3}}}, "Unknown setting tune.pruner.asha.rungs"),
        (
            {"space": {"train.epochs": {"int": [1, 5]}}, "pruner": {"asha": {"max_epochs": 5}}},
            "train.epochs cannot be searched with the asha pruner",
        ),
        ({"space": SPACE, "objective": "sharpe"}, "tune.objective: expected one of val_loss"),
        ({"space": SPACE, "folds": 1}, "tune.folds: expected an integer >= 2"),
        (
            {"space": SPACE, "budget": {"seconds": -1}},
            "tune.budget.seconds: expected a number of seconds > 0",
        ),
        ({"space": SPACE, "budget": {"minutes": 5}}, "Unknown setting tune.budget.minutes"),
        ({"space": SPACE, "test": 0.9}, "tune.test: expected a fraction"),
        ({"space": SPACE, "trials": True}, "tune.trials: expected an integer"),
    ],
)
def test_a_bad_section_is_one_clear_error(section, message):
    with pytest.raises(ConfigError) as info:
        check_tune(section)
    assert message in info.value.message


def test_a_pair_overrides_the_shared_section():
    raw = {
        "version": 1,
        "tune": {"trials": 5, "space": {**SPACE, "model.params.dropout": {"uniform": [0.0, 0.5]}}},
        "pairs": [
            "BTCUSDT",
            {
                "pair": "eth/usdt",
                "tune": {"trials": 2, "space": {"model.params.dropout": None}},
                "train": {"epochs": 3},
            },
        ],
    }
    tm = split_manifest(raw)
    assert "tune" not in tm.manifest_raw and tm.manifest_raw["pairs"][1] == {
        "pair": "eth/usdt",
        "train": {"epochs": 3},
    }
    btc, eth = tm.settings_for("BTCUSDT"), tm.settings_for("ETHUSDT")
    assert btc.trials == 5 and [d.name for d in btc.space] == ["train.learning_rate", "model.params.dropout"]
    assert eth.trials == 2 and [d.name for d in eth.space] == ["train.learning_rate"]


def test_a_pair_override_with_a_typo_is_named():
    with pytest.raises(ConfigError, match=r"pairs\[0\].tune.trails"):
        split_manifest({"tune": {"space": SPACE}, "pairs": [{"pair": "ETHUSDT", "tune": {"trails": 2}}]})


def test_a_manifest_without_a_tune_section_says_what_to_add():
    with pytest.raises(ConfigError, match="has no tune section"):
        split_manifest({"version": 1, "pairs": ["ETHUSDT"]})


def test_trainer_tune_refuses_a_bad_section_before_any_work(tmp_path, trainer):
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\npairs: [ETHUSDT]\ntune:\n  space: {train.learning_rate: {log_uniform: [0, 0.1]}}\n"
    )
    result = trainer("tune", m)
    assert result.exit_code == 2
    assert "tune.space.train.learning_rate.log_uniform: expected bounds > 0" in result.output
    assert not (tmp_path / "artifacts").exists()


def test_trainer_tune_refuses_a_value_the_model_builder_would_refuse(tmp_path, trainer):
    from trainer_core.testing import write_training_ready

    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=600, seed=1)
    m = tmp_path / "m.yaml"
    m.write_text(
        f"version: 1\npairs: [ETHUSDT]\noutput: {tmp_path / 'out'}\n"
        f"defaults: {{data: {{path: {tmp_path / 'inputs'}}}, labels: {{future_window: 5}}}}\n"
        "tune:\n  space: {model.params.dropout: {uniform: [0.0, 1.0]}}\n"
    )
    result = trainer("tune", m)
    assert result.exit_code == 2, result.output
    assert "tune.space.model.params.dropout (uniform value 1.0)" in result.output
    assert "expected a number in [0, 1)" in result.output
    assert not (tmp_path / "out").exists()


# -- the paired interval -------------------------------------------------------------------------


def _coverage(series_maker, block: int, runs: int = 200) -> float:
    """How often the interval of a zero-mean difference holds zero."""
    hits = 0
    for seed in range(runs):
        d = series_maker(np.random.default_rng(seed))
        a = scorer("mean_net_return", np.zeros(len(d), int), np.ones((len(d), 3)), d)
        b = scorer("mean_net_return", np.zeros(len(d), int), np.ones((len(d), 3)), np.zeros(len(d)))
        iv = paired_interval(a, b, len(d), block, 0.9, resamples=300, seed=seed)
        hits += iv["low"] <= 0 <= iv["high"]
    return hits / runs


def _ar1(rng, n=400, phi=0.95):
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def test_the_interval_covers_on_independent_rows():
    assert _coverage(lambda rng: rng.normal(size=400), block=1) >= 0.82  # nominal 0.90


def test_the_interval_is_too_narrow_when_dependence_outlasts_the_block():
    # the assumption broken: rows depend on each other for ~40 rows, resampled one by one
    too_short = _coverage(_ar1, block=1)
    long_enough = _coverage(_ar1, block=80)
    assert too_short < 0.5
    assert long_enough > too_short + 0.25


def test_the_interval_pairs_the_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    shared = rng.dirichlet([1, 1, 1], size=600)  # both models share most of their errors
    better = shared.copy()
    better[np.arange(600), y] += 0.05
    better /= better.sum(axis=1, keepdims=True)
    a = scorer("val_loss", y, better, np.zeros(600))
    b = scorer("val_loss", y, shared, np.zeros(600))
    iv = paired_interval(a, b, 600, block=5)
    assert iv["low"] > 0  # a small but consistent gain is detected because the rows are paired
    assert iv["difference"] == pytest.approx(a(np.arange(600)) - b(np.arange(600)))


# -- deflated Sharpe ratio -----------------------------------------------------------------------


def test_the_best_of_many_noise_strategies_is_deflated():
    rng = np.random.default_rng(1)
    trials = [rng.normal(0, 1, 500) for _ in range(50)]
    sharpes = [sharpe(r) for r in trials]
    best = trials[int(np.argmax(sharpes))]
    assert probabilistic_sharpe(best, 0.0) > 0.9  # naively it looks like skill
    out = deflated_sharpe(best, sharpes, trials=50)
    assert out["expected_max_sharpe"] > 0.05
    assert out["dsr"] < 0.8  # against the best of 50 skill-less tries it does not


def test_a_real_edge_survives_deflation():
    rng = np.random.default_rng(2)
    trials = [rng.normal(0, 1, 2000) for _ in range(20)]
    trials[7] = rng.normal(0.25, 1, 2000)
    sharpes = [sharpe(r) for r in trials]
    assert deflated_sharpe(trials[7], sharpes, trials=20)["dsr"] > 0.99


def test_the_deflation_grows_with_the_number_of_trials():
    assert expected_max_sharpe(1, 0.01) == 0.0
    assert 0 < expected_max_sharpe(10, 0.01) < expected_max_sharpe(1000, 0.01)


def test_fat_tails_lower_the_probabilistic_sharpe():
    # the normal-returns assumption broken: same Sharpe, heavy negative skew and kurtosis
    rng = np.random.default_rng(3)
    normal = rng.normal(0.1, 1, 1000)
    crash = rng.normal(0.2, 0.5, 1000)
    crash[rng.choice(1000, 10, replace=False)] -= 8
    crash = (crash - crash.mean()) / crash.std() * normal.std() + normal.mean()  # same mean and sd
    assert sharpe(crash) == pytest.approx(sharpe(normal), rel=1e-6)
    assert probabilistic_sharpe(crash, 0.0) < probabilistic_sharpe(normal, 0.0)


# -- probability of backtest overfitting -----------------------------------------------------------


def _row_scorers(matrix):
    return [(lambda idx, col=col: float(matrix[idx, col].mean())) for col in range(matrix.shape[1])]


def test_pbo_of_noise_trials_is_about_a_half():
    rng = np.random.default_rng(4)
    values = [pbo(_row_scorers(rng.normal(size=(1000, 10))), 1000)["pbo"] for _ in range(12)]
    assert 0.3 < float(np.mean(values)) < 0.7


def test_pbo_of_a_trial_with_real_skill_is_low():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(1000, 10))
    m[:, 3] += 0.3
    assert pbo(_row_scorers(m), 1000)["pbo"] < 0.05


def test_pbo_is_misled_when_the_blocks_are_not_exchangeable():
    # the assumption broken: trial 0 wins only in the first 20 % of rows (one regime), losing after
    rng = np.random.default_rng(6)
    m = rng.normal(size=(1000, 6)) * 0.1
    m[:200, 0] += 3.0
    m[200:, 0] -= 0.2
    out = pbo(_row_scorers(m), 1000, blocks=10)
    assert out["pbo"] > 0.2  # the regime makes the in-sample winner a loser elsewhere, often


def test_pbo_needs_two_trials():
    assert pbo(_row_scorers(np.zeros((100, 1))), 100)["pbo"] is None


# -- warm start ------------------------------------------------------------------------------------


def test_a_new_study_starts_from_the_best_params_of_finished_studies(tmp_path):
    import optuna

    from trainer_core.testing import write_training_ready
    from trainer_core.tune.driver import PairSearch, TuneRun, distributions, encode, make_pruner

    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=600, seed=1)
    m = tmp_path / "m.yaml"
    m.write_text(
        f"version: 1\npairs: [ETHUSDT]\noutput: {tmp_path / 'out'}\n"
        f"defaults: {{data: {{path: {tmp_path / 'inputs'}}}, labels: {{future_window: 5}}}}\n"
        "tune:\n  space:\n    train.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}\n"
        "    model.params.lstm_units: {choice: [[4], [8, 4]]}\n"
    )
    lines: list[str] = []
    run = TuneRun(str(m), echo=lines.append)
    settings = run.settings["ETHUSDT"]
    dims = {d.name: d for d in settings.space}
    (tmp_path / "out" / "tune").mkdir(parents=True)
    storage = run._storage()
    done = optuna.create_study(study_name="BTCUSDT_FW005-earlier", storage=storage)
    for lr, units, value in ((0.001, [8, 4], 0.9), (0.005, [4], 1.1)):
        params = {
            "train.learning_rate": lr,
            "model.params.lstm_units": encode(dims["model.params.lstm_units"], units),
        }
        done.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions(settings), value=value)
        )
    outside = optuna.create_study(study_name="XRPUSDT-outside", storage=storage)  # a best outside the space
    outside.add_trial(
        optuna.trial.create_trial(
            params={"train.learning_rate": 0.5},
            distributions={"train.learning_rate": optuna.distributions.FloatDistribution(0.1, 1.0)},
            value=0.1,
        )
    )
    study = optuna.create_study(study_name="ETHUSDT-new", storage=storage, pruner=make_pruner(settings))
    search = PairSearch(run.specs[0], settings, study, "ETHUSDT-new", tmp_path, embargo=5)
    run.searches["ETHUSDT"] = search
    job = run._trial_job(search)
    assert job["params"] == {"train.learning_rate": 0.001, "model.params.lstm_units": [8, 4]}
    assert study.trials[0].user_attrs["warm_start_from"] == "BTCUSDT_FW005-earlier"
    assert lines == ["ETHUSDT: warm start from BTCUSDT_FW005-earlier's best params"]
    assert job["spec"]["train"]["learning_rate"] == 0.001 and job["spec"]["model"]["params"][
        "lstm_units"
    ] == [8, 4]
