"""The worked example distribution (plugins/examples/trainer-example) installed for real, used from
the `trainer` command line; and a plugin module that a manifest names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_core.testing import TINY_SETTINGS, write_training_ready

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "plugins" / "examples" / "trainer-example"
WRITING_PLUGINS = REPO / "docs" / "writing-plugins.md"


def trainer_command() -> list[str]:
    """The `trainer` console script of the Python running the tests (not whatever is first on PATH)."""
    script = Path(sys.executable).with_name("trainer")
    if script.is_file():
        return [str(script)]
    found = shutil.which("trainer")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from trainer_core.cli import main; sys.exit(main())"]


def run_trainer(*args, pythonpath=(), cwd=None, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINER_LOAD_PLUGINS", "TRAINER_TRACE_PLUGINS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    env.update(env_overrides)
    return subprocess.run(
        [*trainer_command(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def listed(output: str) -> dict[tuple[str, str], str]:
    """`trainer plugins` rows as {(kind, name): plugin}."""
    rows = {}
    for line in output.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            rows[(parts[0], parts[1])] = parts[2]
    return rows


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example distribution, built and installed into a private folder (use it via PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "trainer_example" / "__init__.py").is_file()
    assert list(target.glob("trainer_example-*.dist-info/entry_points.txt"))
    return target


def test_installed_example_plugin_is_listed_under_its_entry_point_name(installed):
    result = run_trainer("plugins", pythonpath=[installed])
    assert result.returncode == 0, result.stderr
    rows = listed(result.stdout)
    assert rows[("model", "tiny-gru")] == "example"
    assert rows[("balancer", "every-other")] == "example"
    assert rows[("model", "lstm")] == "trainer_plugins.models.lstm"  # the built-ins are still there
    assert "One GRU layer -> softmax" in result.stdout  # the description is the factory's docstring


def test_the_example_plugin_is_not_listed_without_the_distribution():
    rows = listed(run_trainer("plugins").stdout)
    assert ("model", "tiny-gru") not in rows  # so the test above sees the installed distribution


@pytest.mark.parametrize(
    "allow, loaded",
    [
        ("", False),
        ("example", True),
        ("trainer_example", True),
        ("some-other,example", True),
        ("other", False),
    ],
)
def test_trainer_load_plugins_allow_list(installed, allow, loaded):
    result = run_trainer("plugins", pythonpath=[installed], TRAINER_LOAD_PLUGINS=allow)
    assert result.returncode == 0, result.stderr
    rows = listed(result.stdout)
    assert (("model", "tiny-gru") in rows) is loaded
    assert (("balancer", "every-other") in rows) is loaded
    assert ("model", "lstm") in rows  # built-ins always load


def test_trainer_trace_plugins_prints_hook_calls(installed):
    result = run_trainer("plugins", "--kind", "model", pythonpath=[installed], TRAINER_TRACE_PLUGINS="1")
    assert result.returncode == 0, result.stderr
    assert "[trainer trace] trainer_register_model_builders(register) -> [example]" in result.stderr
    quiet = run_trainer("plugins", "--kind", "model", pythonpath=[installed])
    assert "[trainer trace]" not in quiet.stderr


@pytest.mark.slow
def test_a_manifest_selects_the_example_builder_and_balancer(installed, tmp_path):
    data = tmp_path / "inputs"
    write_training_ready(data, "ETHUSDT", rows=600, seed=2)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\n"
        "defaults:\n"
        "  model: {builder: tiny-gru, params: {units: 4}}\n"
        "  balance: {method: every-other}\n"
        "pairs: [ETHUSDT]\n"
    )
    sets = [s for s in TINY_SETTINGS if not s.startswith("model.params.")]  # those are the lstm's
    set_args = [arg for s in sets for arg in ("--set", s)]

    checked = run_trainer("validate", manifest, pythonpath=[installed])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "model=tiny-gru balance=every-other" in checked.stdout

    out = tmp_path / "out"
    result = run_trainer(
        "run",
        "--manifest",
        manifest,
        "--pair",
        "ETHUSDT",
        "--data",
        data,
        "--output",
        out,
        "--epochs",
        "1",
        *set_args,
        pythonpath=[installed],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Model 'tiny-gru'" in result.stdout
    assert (out / "ETHUSDT" / "_SUCCESS.json").is_file()
    meta = json.loads(next((out / "ETHUSDT").glob("metadata_*.json")).read_text())
    assert meta["model"]["builder"] == "tiny-gru"
    assert meta["model"]["params"] == {"units": 4}
    # GRU(4) on 8 features (Keras' reset_after=True: 3 gates x (8 + 4 + 2) x 4) + Dense(4 -> 3)
    assert meta["model"]["total_parameters"] == 3 * 4 * (8 + 4 + 2) + (4 * 3 + 3)
    balancing = meta["balancing"]
    assert balancing["method"] == "every-other"
    assert balancing["class_weight"] is None
    assert balancing["train_targets_after"] == (balancing["train_targets_before"] + 1) // 2


def test_a_bad_parameter_for_the_example_builder_fails_before_training(installed, tmp_path):
    result = run_trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        tmp_path,
        "--output",
        tmp_path / "out",
        "--config-test",
        "--set",
        "model.builder=tiny-gru",
        "--set",
        "model.params.units=0",
        pythonpath=[installed],
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "model.params.units: expected an integer >= 1, got 0." in result.stderr
    assert "Traceback" not in result.stderr


MANIFEST_PLUGIN = '''
"""A plugin module a manifest names: the balancer `last-half`."""

from trainer_core import Balance, hookimpl


class LastHalf:
    """The later half of the training targets."""

    def balance(self, labels, target_idx, rng, params):
        return Balance(target_idx[len(target_idx) // 2:])


@hookimpl
def trainer_register_balancers(register):
    register("last-half", LastHalf)
'''


@pytest.fixture
def manifest_with_plugin(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "my_manifest_plugin.py").write_text(MANIFEST_PLUGIN)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\n"
        "plugins: [my_manifest_plugin]\n"
        "defaults:\n"
        "  balance: {method: last-half}\n"
        "pairs: [ETHUSDT, BTCUSDT]\n"
    )
    return manifest, tmp_path / "site"


def test_a_plugin_module_named_in_the_manifest_is_loaded(manifest_with_plugin):
    manifest, site = manifest_with_plugin
    checked = run_trainer("validate", manifest, pythonpath=[site])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"ETHUSDT .*balance=last-half", checked.stdout)
    assert re.search(r"BTCUSDT .*balance=last-half", checked.stdout)

    result = run_trainer("plugins", "--manifest", manifest, pythonpath=[site])
    assert result.returncode == 0, result.stderr
    assert listed(result.stdout)[("balancer", "last-half")] == "my_manifest_plugin"
    assert ("balancer", "last-half") not in listed(run_trainer("plugins", pythonpath=[site]).stdout)


def test_a_manifest_plugin_that_cannot_be_imported_is_a_clear_error(manifest_with_plugin):
    manifest, _ = manifest_with_plugin  # the module's folder is not on PYTHONPATH
    result = run_trainer("validate", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Cannot import plugin module 'my_manifest_plugin' (named in the manifest)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_manifest_plugin_loads_even_when_trainer_load_plugins_is_empty(manifest_with_plugin):
    manifest, site = manifest_with_plugin
    checked = run_trainer("validate", manifest, pythonpath=[site], TRAINER_LOAD_PLUGINS="")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "balance=last-half" in checked.stdout


def test_writing_plugins_quotes_the_example_files_exactly():
    """Every block marked `<!-- quote: PATH -->` in docs/writing-plugins.md is that file, verbatim."""
    text = WRITING_PLUGINS.read_text(encoding="utf-8")
    quotes = [
        (m["path"], m["body"])
        for m in re.finditer(
            r"<!-- quote: (?P<path>\S+) -->\s*\n(?P<fence>`{3,})[a-z]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
            text,
            re.DOTALL | re.MULTILINE,
        )
    ]
    quoted = {path for path, _ in quotes}
    assert {
        "plugins/examples/trainer-example/pyproject.toml",
        "plugins/examples/trainer-example/trainer_example/__init__.py",
        "plugins/examples/trainer-example/README.md",
    } <= quoted
    for path, block in quotes:
        assert block == (REPO / path).read_text(encoding="utf-8"), (
            f"docs/writing-plugins.md quotes {path} out of date"
        )
