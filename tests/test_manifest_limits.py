"""Hostile and absurd manifests fail fast with one line and a hint: every setting is bounded, YAML
aliases and nesting are limited while the YAML is read, and the split's row check is constant time."""

from __future__ import annotations

import itertools
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer_core.errors import ConfigError
from trainer_core.manifest import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_PAIRS,
    default_manifest,
    load_manifest,
    manifest_from_dict,
    parse_set,
)
from trainer_core.split import _bounds, minimum_rows

FAST = 1.0  # seconds a hostile manifest may take to be refused (in process, without the CLI start-up)


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(fn, *args):
    """Run ``fn(*args)``, expect a ConfigError; return (message, hint, seconds)."""
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        fn(*args)
    return err.value.message, err.value.hint, time.perf_counter() - start


def assert_one_line_and_hint(result, *expected):
    """What the CLI printed is an `Error:` line and a `Hint:` line, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], result.output


def billion_laughs(levels: int = 12, width: int = 9) -> str:
    lines = ["version: 1", "pairs: [ETHUSDT]", "defaults:", "  model:", "    params:"]
    lines.append("      a0: &a0 [" + ", ".join(["lol"] * width) + "]")
    for i in range(1, levels):
        lines.append(f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- issue: values validation accepted that overflow, crash later or hang ---------------------


def test_a_take_profit_of_1e308_is_one_line_and_exit_2(tmp_path, trainer):
    path = write(tmp_path, "version: 1\npairs: [ETHUSDT]\ndefaults: {labels: {take_profit_pct: 1.0e308}}\n")
    # the labeler checks its own params (the old key is an alias of labels.params.take_profit_pct)
    assert_one_line_and_hint(trainer("validate", path), "labels.params.take_profit_pct", "<= 1,000")
    assert_one_line_and_hint(
        trainer("run", "--manifest", path, "--pair", "ETHUSDT", "--config-test"),
        "labels.params.take_profit_pct",
    )
    assert_one_line_and_hint(
        trainer("run", "--pair", "ETHUSDT", "--set", "labels.stop_loss_pct=1.0e308", "--config-test"),
        "labels.params.stop_loss_pct",
    )


def test_a_seed_beyond_32_bits_is_refused_before_any_data_are_read(tmp_path, trainer):
    path = write(tmp_path, f"version: 1\npairs: [ETHUSDT]\ndefaults: {{train: {{seed: {2**32}}}}}\n")
    assert_one_line_and_hint(trainer("validate", path), "defaults.train.seed", "<= 4,294,967,295")
    assert_one_line_and_hint(
        trainer("run", "--manifest", path, "--pair", "ETHUSDT", "--config-test"), "train.seed"
    )
    spec = default_manifest().resolve("ETHUSDT", sets=[f"train.seed={2**32 - 1}"])  # the largest is fine
    assert spec.train.seed == 2**32 - 1


@pytest.mark.parametrize(
    "setting, value",
    [
        ("split.embargo", "99999999999999"),
        ("split.validation", "0.999999"),
        ("split.test", "0.95"),
        ("split.test", "1.0e-300"),
        ("split.validation", "1.0e-300"),
        ("train.sequence_length", "1000000"),
        ("train.epochs", "100000000"),
        ("train.batch_size", "100000000"),
        ("train.learning_rate", "1000.0"),
        ("split.folds", "100000"),
        ("balance.class_weights", "{0: .inf, 1: 1, 2: 1}"),
        ("balance.class_weights", "{0: .nan, 1: 1, 2: 1}"),
        ("train.focal_alpha", "[.inf, 1, 1]"),
        ("resources.cpus", "1.0e+300"),
        ("train.seed", str(2**64)),
        ("train.min_learning_rate", str(10**400)),
        ("data.timeframe", "99999999999m"),
        ("resources.memory", "lots"),
    ],
)
def test_every_setting_is_bounded_and_refused_fast(setting, value):
    message, hint, seconds = refused(default_manifest().resolve, "ETHUSDT", [f"{setting}={value}"])
    assert message.startswith(f"--set {setting}=") and f"{setting}: expected" in message
    assert hint and seconds < FAST


@pytest.mark.parametrize(
    "setting, value, expected",
    [
        ("split.embargo", "100000000", 100_000_000),
        ("split.validation", "0.9", 0.9),
        ("train.sequence_length", "10000", 10_000),
        ("resources.memory", "16Gi", "16Gi"),
        ("resources.memory", "1.5e9", "1.5e9"),
        ("evaluation.trade_threshold", "1", 1.0),
        ("split.min_validation_targets", "1", 1),
    ],
)
def test_the_bounds_themselves_are_accepted(setting, value, expected):
    section, key = setting.split(".")
    spec = default_manifest().resolve("ETHUSDT", sets=[f"{setting}={value}"])
    assert getattr(spec, section)[key] == expected


@pytest.mark.parametrize(
    "setting, value",
    [
        ("labels.params.future_window", "10000000"),
        ("labels.take_profit_pct", "1.0e308"),
        ("labels.params.short_stop_loss_pct", "5000"),
        ("labels.params.stop_loss_pct", ".nan"),
        ("features.ma_long", "1000000000"),
        ("evaluation.calibration_bins", "1000000"),
    ],
)
def test_every_component_setting_is_bounded_by_the_component_that_owns_it(setting, value):
    from trainer_core.pipeline import check_components
    from trainer_core.plugins import load_plugins

    spec = default_manifest().resolve("ETHUSDT", sets=[f"{setting}={value}"])
    message, hint, seconds = refused(check_components, spec, load_plugins(entry_points=False))
    section, _, key = setting.replace(".params.", ".").partition(".")
    owned = key if section == "evaluation" else f"params.{key}"  # evaluation is the reporters' own
    assert message.startswith(f"{section}.{owned}: expected"), message
    assert hint and seconds < FAST


@pytest.mark.parametrize(
    "setting, value, expected",
    [("labels.params.future_window", "100000", 100_000), ("labels.params.take_profit_pct", "1000", 1000.0)],
)
def test_the_label_params_bounds_themselves_are_accepted(setting, value, expected):
    from trainer_core.testing import resolved

    spec = resolved(default_manifest().resolve("ETHUSDT", sets=[f"{setting}={value}"]))
    assert spec.resolved["label_settings"][setting.rpartition(".")[2]] == expected


def test_minimum_rows_is_constant_time_and_the_split_refuses_a_huge_embargo():
    import numpy as np

    from trainer_core.errors import DataError
    from trainer_core.split import purged_split

    start = time.perf_counter()
    for embargo in (10**8, 99_999_999_999_999):
        for validation, test in (
            (0.2, 0.0),
            (0.2, 0.1),
            (0.999999, 0.0),
            (1e-9, 0.1),
            (1e-300, 0.0),
            (0.2, 1e-300),
        ):
            need = minimum_rows(120, embargo, validation, test)
            assert need > embargo
    assert time.perf_counter() - start < FAST
    start = time.perf_counter()
    with pytest.raises(DataError, match="at least 125,000,000,000,149 rows are needed"):
        purged_split(np.zeros(1000, dtype=np.int8), 120, 120, 99_999_999_999_999, 0.2)
    assert time.perf_counter() - start < FAST


def _minimum_rows_by_counting(window, embargo, validation, test):
    """The split's former search, one row at a time: the reference for small inputs."""
    n = window + embargo + 2
    while True:
        val_start, test_start = _bounds(n, validation, test)
        ok = val_start - embargo > window - 1
        if test_start is None:
            ok = ok and n - val_start >= 1
        else:
            ok = ok and test_start - embargo > val_start and n - test_start >= 1
        if ok:
            return n
        n += 1


@settings(max_examples=300, deadline=2000)
@given(
    window=st.integers(1, 400),
    embargo=st.integers(0, 600),
    validation=st.one_of(st.sampled_from([0.2, 0.1, 0.5, 0.05, 0.9, 0.3333]), st.floats(0.01, 0.9)),
    test=st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.05]), st.floats(0.001, 0.5)),
)
def test_minimum_rows_equals_the_row_by_row_search(window, embargo, validation, test):
    if validation + test >= 0.99:
        return
    assert minimum_rows(window, embargo, validation, test) == _minimum_rows_by_counting(
        window, embargo, validation, test
    )


# -- YAML aliases and nesting -----------------------------------------------------------------


def test_a_billion_laughs_under_model_params_fails_fast(tmp_path, trainer):
    path = write(tmp_path, billion_laughs())
    message, hint, seconds = refused(load_manifest, path)
    assert f"holds more than {MAX_NODES:,} values once its aliases are expanded at line" in message
    assert "alias" in hint and seconds < FAST
    assert_one_line_and_hint(trainer("validate", path), "holds more than")
    assert_one_line_and_hint(
        trainer("run", "--manifest", path, "--pair", "ETHUSDT", "--config-test"), "aliases"
    )


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 50_000])
def test_a_deeply_nested_manifest_fails_fast(tmp_path, trainer, depth):
    path = write(
        tmp_path,
        f"version: 1\npairs: [ETHUSDT]\ndefaults: {{model: {{params: {{x: {deep_list(depth)}}}}}}}\n",
    )
    message, hint, seconds = refused(load_manifest, path)
    assert f"nests deeper than {MAX_DEPTH} levels at line 3" in message and seconds < FAST
    if depth == 5000:
        assert_one_line_and_hint(trainer("validate", path), "nests deeper")
        assert_one_line_and_hint(
            trainer("run", "--manifest", path, "--pair", "ETHUSDT", "--config-test"), "nests"
        )


def test_deep_block_mappings_and_aliases_that_nest_too_deep_fail_fast(tmp_path):
    block = "".join("  " * (i + 3) + f"k{i}:\n" for i in range(200)) + "  " * 203 + "v: 1\n"
    path = write(tmp_path, "version: 1\npairs: [ETHUSDT]\ndefaults:\n  model:\n    params:\n" + block)
    assert "nests deeper than" in refused(load_manifest, path)[0]
    # each anchor alone is shallow; used inside one another they pass the limit
    anchors = ["a0: &a0 [[[[[[[[1]]]]]]]]"] + [f"a{i}: &a{i} [[[[[[[[*a{i - 1}]]]]]]]]" for i in range(1, 10)]
    path = write(
        tmp_path, "version: 1\npairs: [ETHUSDT]\ndefaults: {model: {params: {" + ", ".join(anchors) + "}}}\n"
    )
    message, _, seconds = refused(load_manifest, path)
    assert "nests deeper than" in message and seconds < FAST


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = write(tmp_path, "version: 1\npairs: [ETHUSDT]\ndefaults: {model: {params: &x {y: [*x]}}}\n")
    message, _, seconds = refused(load_manifest, path)
    assert "uses the alias *x inside its own anchor" in message and seconds < FAST


def test_set_values_are_limited_like_a_manifest(trainer):
    laughs = "[" + ", ".join(["&a0 [" + ", ".join(["lol"] * 9) + "]"] + ["*a0"] * 8) + "]"
    assert len(parse_set(f"model.params.x={laughs}")[1]) == 9  # 9 x 10 values: fine
    # a value of 5,000 levels, and a key of 5,000 parts
    for text in (f"model.params.x={deep_list(5000)}", "model.params" + ".k" * 5000 + "=1"):
        message, hint, seconds = refused(parse_set, text)
        assert "nests deeper than" in message and hint and seconds < FAST
    assert_one_line_and_hint(
        trainer("run", "--pair", "ETHUSDT", "--set", f"model.params.x={deep_list(5000)}", "--config-test"),
        "nests",
    )


def test_a_small_alias_is_still_fine(tmp_path):
    text = "version: 1\ndefaults: {model: {params: {lstm_units: &units [8, 4], dense_units: *units}}}\npairs: [ETHUSDT]\n"
    spec = load_manifest(write(tmp_path, text)).resolve("ETHUSDT")
    assert list(spec.model.params["dense_units"]) == [8, 4]


def test_a_manifest_built_in_python_is_limited_too():
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    message, _, seconds = refused(
        manifest_from_dict, {"pairs": ["ETHUSDT"], "defaults": {"model": {"params": {"x": nested}}}}
    )
    assert "nests deeper than" in message and seconds < FAST
    cyclic: dict = {}
    cyclic["self"] = cyclic
    assert (
        "nests deeper than"
        in refused(manifest_from_dict, {"pairs": ["ETHUSDT"], "defaults": {"data": {"params": cyclic}}})[0]
    )


def test_params_and_pairs_are_bounded():
    params = {f"k{i}": i for i in range(300)}
    message, _, _ = refused(
        manifest_from_dict, {"pairs": ["ETHUSDT"], "defaults": {"data": {"params": params}}}
    )
    assert "defaults.data.params: expected a mapping of at most 200 values" in message
    names = [
        "".join(p)
        for p in itertools.islice(itertools.product(string.ascii_uppercase, repeat=4), MAX_PAIRS + 1)
    ]
    message, _, _ = refused(manifest_from_dict, {"pairs": names})
    assert f"a manifest holds at most {MAX_PAIRS:,}" in message
    start = time.perf_counter()
    assert len(manifest_from_dict({"pairs": names[:MAX_PAIRS]}).pairs) == MAX_PAIRS
    assert time.perf_counter() - start < 2 * FAST


# -- fuzzing: aliases and depth never give anything but a ConfigError, and never take long ------


def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


@st.composite
def hostile_yaml(draw):
    """A manifest whose `params` hold chained anchors (levels x width) and nesting, at some place."""
    levels = draw(st.integers(0, 14))
    width = draw(st.integers(1, 12))
    depth = draw(st.integers(0, 3 * MAX_DEPTH))
    where = draw(st.sampled_from(["model", "data", "pair", "reporters"]))
    anchors = ["a0: &a0 " + _nested(depth % 7, "lol")]
    for i in range(1, levels + 1):
        anchors.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    anchors.append("deep: " + _nested(depth, "1"))
    body = "{" + ", ".join(anchors) + "}"
    if where in ("model", "data"):
        return f"version: 1\npairs: [ETHUSDT]\ndefaults: {{{where}: {{params: {body}}}}}\n"
    if where == "pair":
        return f"version: 1\npairs: [{{pair: ETHUSDT, model: {{params: {body}}}}}, BTCUSDT]\n"
    return f"version: 1\npairs: [ETHUSDT]\nx: &r {body}\ndefaults: {{reporters: [*r]}}\n"


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile_yaml())
def test_fuzz_aliases_and_depth_give_a_config_error_fast(tmp_path, text):
    path = write(tmp_path, text)
    start = time.perf_counter()
    try:
        manifest = load_manifest(path)
    except ConfigError as exc:
        assert exc.message and exc.hint
    else:
        manifest.resolve_all()
    assert time.perf_counter() - start < 2 * FAST


@settings(max_examples=60, deadline=3000)
@given(
    levels=st.integers(0, 14),
    width=st.integers(1, 12),
    depth=st.integers(0, 3 * MAX_DEPTH),
    key_depth=st.integers(0, 2 * MAX_DEPTH),
)
def test_fuzz_set_values_give_a_config_error_fast(levels, width, depth, key_depth):
    parts = ["&a0 " + _nested(depth, "1")]
    value = parts[0]
    for i in range(1, levels + 1):
        value = f"&a{i} [" + ", ".join([value] + [f"*a{i - 1}"] * (width - 1)) + "]"
    key = "model.params" + ".k" * key_depth
    start = time.perf_counter()
    try:
        default_manifest().resolve("ETHUSDT", sets=[f"{key}={value}"])
    except ConfigError as exc:
        assert exc.message and exc.hint
    assert time.perf_counter() - start < 2 * FAST
