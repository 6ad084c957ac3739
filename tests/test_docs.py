"""The docs stay in step with the code: every setting in docs/manifest.md, every metadata field in
docs/artifacts.md, and the README's install and test commands are the ones CI runs."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import os
import re
from pathlib import Path

import pytest
import yaml

from trainer_core.manifest import ALIASES, DEFAULTS, SCHEMA, TOP_LEVEL_KEYS

REPO = Path(__file__).resolve().parents[1]
MANIFEST_DOC = REPO / "docs" / "manifest.md"
ARTIFACTS_DOC = REPO / "docs" / "artifacts.md"
DOTTED = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")
CODE = re.compile(r"`([^`]+)`")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row (header rows included, separator rows left out)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def first_column_keys(text: str) -> dict[str, list[str]]:
    """Dotted keys written as the first cell of a table row -> that row's cells."""
    out = {}
    for cells in table_rows(text):
        for code in CODE.findall(cells[0]):
            if DOTTED.fullmatch(code):
                assert code not in out, f"`{code}` has two rows in the tables"
                out[code] = cells
    return out


def component_params() -> dict[str, object]:
    """`section.params.key` of the built-in components the manifest page documents, with defaults."""
    from trainer_plugins.models.lstm import DEFAULT_PARAMS

    out = {f"model.params.{k}": v for k, v in DEFAULT_PARAMS.items()}
    try:
        from trainer_plugins.loaders.synthetic import DEFAULTS as SYNTHETIC
    except ModuleNotFoundError:
        SYNTHETIC = {}
    out.update({f"data.params.{k}": v for k, v in SYNTHETIC.items()})
    from trainer_plugins.features.seed import DEFAULTS as SEED
    from trainer_plugins.labelers.tp_sl import DEFAULTS as TP_SL
    from trainer_plugins.reporters.trading.settings import DEFAULTS as EVALUATION

    out.update({f"labels.params.{k}": v for k, v in TP_SL.items()})
    out.update({f"evaluation.{k}": v for k, v in EVALUATION.items()})
    out.update({f"features.params.{k}": v for k, v in SEED.items()})
    return out


def aliases() -> set[str]:
    """The old names of params that docs/manifest.md documents as aliases."""
    return {f"{section}.{key}" for section, keys in ALIASES.items() for key in keys}


def schema_keys() -> list[str]:
    return [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys]


def _normalise(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


# -- (a) docs/manifest.md lists every setting, and nothing that does not exist ------------------


@pytest.fixture(scope="module")
def manifest_doc() -> str:
    return MANIFEST_DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("dotted", schema_keys())
def test_every_setting_has_a_row_in_manifest_md(manifest_doc, dotted):
    assert f"`{dotted}`" in manifest_doc
    assert dotted in first_column_keys(manifest_doc), f"no table row for `{dotted}` in docs/manifest.md"


@pytest.mark.parametrize("alias", sorted(aliases()))
def test_every_alias_is_documented_as_one(manifest_doc, alias):
    section, key = alias.split(".")
    assert f"`{alias}`" in manifest_doc and f"`{section}.params.{key}`" in manifest_doc
    assert alias not in first_column_keys(manifest_doc), f"`{alias}` is an alias, not a setting of its own"


def test_every_key_in_the_tables_exists(manifest_doc):
    known = set(schema_keys()) | set(component_params()) | aliases()
    for dotted in first_column_keys(manifest_doc):
        assert dotted in known, f"docs/manifest.md documents `{dotted}`, which is not a setting"
    for cells in table_rows(manifest_doc):  # a setting named anywhere in a table must exist too
        for code in CODE.findall(" ".join(cells)):
            if DOTTED.fullmatch(code) and code.split(".")[0] in SCHEMA:
                assert code in known, f"docs/manifest.md names `{code}` in a table; no such setting"


def test_the_documented_defaults_are_the_built_in_ones(manifest_doc):
    expected = {f"{s}.{k}": DEFAULTS[s][k] for s in SCHEMA for k in SCHEMA[s]}
    expected.update(component_params())
    for dotted, cells in first_column_keys(manifest_doc).items():
        assert len(cells) == 4, f"row `{dotted}`: expected | setting | type | default | what it does |"
        default = CODE.findall(cells[2])
        assert len(default) == 1, f"row `{dotted}`: the default column holds one `value`"
        assert _normalise(yaml.safe_load(default[0])) == _normalise(expected[dotted]), dotted


def test_top_level_keys_and_reporters_have_rows(manifest_doc):
    first_cells = {code for cells in table_rows(manifest_doc) for code in CODE.findall(cells[0])}
    for key in (*TOP_LEVEL_KEYS, *(s for s in DEFAULTS if s not in SCHEMA)):
        assert key in first_cells, f"no table row for `{key}` in docs/manifest.md"
    reporters = next(cells for cells in table_rows(manifest_doc) if cells[0] == "`reporters`")
    assert yaml.safe_load(CODE.findall(reporters[2])[0]) == DEFAULTS["reporters"]


def test_every_cli_option_is_documented(manifest_doc):
    from trainer_core.cli import cli

    assert {"run", "validate", "plugins"} <= set(cli.commands)
    for name, command in cli.commands.items():
        assert f"### trainer {name}" in manifest_doc, f"`trainer {name}` has no section in docs/manifest.md"
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert f"`{opt}" in manifest_doc, f"trainer {name} {opt} is not in docs/manifest.md"


# -- (b) docs/artifacts.md describes every field build_metadata writes ---------------------------


def _returned_dict(fn: ast.FunctionDef) -> ast.Dict:
    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
    assert len(returns) == 1 and isinstance(returns[0].value, ast.Dict), f"{fn.name} returns one dict literal"
    return returns[0].value


def metadata_keys() -> tuple[list[str], list[str]]:
    """Top-level keys of build_metadata's returned dict literal, and `top.sub` of its literal parts."""
    origin = importlib.util.find_spec("trainer_plugins.reporters.metadata").origin
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    returned = _returned_dict(functions["build_metadata"])
    top, nested = [], []
    for key, value in zip(returned.keys, returned.values):
        assert isinstance(key, ast.Constant), "build_metadata's top-level keys are literal strings"
        top.append(key.value)
        if not isinstance(value, ast.Dict):
            continue
        for sub, sub_value in zip(value.keys, value.values):
            if sub is None:  # **helper(...): the helper's own returned keys
                assert isinstance(sub_value, ast.Call) and sub_value.func.id in functions
                nested += [
                    f"{key.value}.{k.value}" for k in _returned_dict(functions[sub_value.func.id]).keys
                ]
            else:
                nested.append(f"{key.value}.{sub.value}")
    return top, nested


@pytest.fixture(scope="module")
def metadata_section() -> str:
    text = ARTIFACTS_DOC.read_text(encoding="utf-8")
    start = text.index("## metadata_{tag}.json")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_metadata_keys_are_found():
    top, nested = metadata_keys()
    # the original trainer's sections, kept under their names
    assert {"config", "data", "model", "training", "system", "files"} <= set(top)
    assert "config.long_tp_pct" in nested and "model.total_parameters" in nested


@pytest.mark.parametrize("key", metadata_keys()[0])
def test_every_top_level_metadata_key_is_in_artifacts_md(metadata_section, key):
    first_cells = {code for cells in table_rows(metadata_section) for code in CODE.findall(cells[0])}
    assert key in first_cells, f"metadata key `{key}` has no row in docs/artifacts.md"


@pytest.mark.parametrize("dotted", metadata_keys()[1])
def test_every_metadata_field_is_in_artifacts_md(metadata_section, dotted):
    assert f"`{dotted}`" in metadata_section, f"metadata field `{dotted}` is not in docs/artifacts.md"


# -- (c) the README's two commands are the Makefile's, and CI runs the test one ------------------


def fenced_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line.split("  #")[0].strip())
    return lines


def make_dry_run(target: str, venv: Path) -> list[str]:
    """What ``make TARGET`` would run on a machine without the virtual environment ``venv``."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # a make of its own, not a sub-make of the `make test` that may be running these tests
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return [line.strip().replace(f"{venv}/bin/", "") for line in proc.stdout.splitlines()]


def test_readme_names_two_commands_and_ci_runs_the_test_one():
    fenced = fenced_lines((REPO / "README.md").read_text(encoding="utf-8"))
    assert fenced.index("make demo") + 1 == fenced.index("make test"), (
        "the README opens with the two commands"
    )
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "make test" in ci, ".ci/run does not run `make test`"
    assert not any(line.startswith(("pip ", "python -m pytest")) for line in ci), (
        "CI runs what make test runs"
    )


def test_make_demo_sets_up_and_runs_the_readmes_demo(tmp_path):
    fenced = fenced_lines((REPO / "README.md").read_text(encoding="utf-8"))
    demo = next(line for line in fenced if line.startswith("trainer batch manifests/demo.yaml"))
    steps = make_dry_run("demo", tmp_path / "venv")
    assert steps[0] == f"python3 -m venv {tmp_path / 'venv'}", steps  # the environment, created first
    assert "python -m pip install -e ." in steps, steps  # the README's `pip install -e .`
    assert steps[-1] == demo, steps


def test_make_test_sets_up_stops_at_the_quick_tier_then_runs_the_suite(tmp_path):
    fenced = fenced_lines((REPO / "README.md").read_text(encoding="utf-8"))
    installs = [line for line in fenced if line.startswith("pip install")]
    # a user installs the runtime only; the tests (and CI) install the test extra
    assert installs == ["pip install -e .", "pip install -e '.[test]'"], installs
    assert fenced.index("python3 -m venv .venv") < fenced.index(installs[0])
    steps = make_dry_run("test", tmp_path / "venv")
    assert steps[0] == f"python3 -m venv {tmp_path / 'venv'}", steps
    assert "python -m " + installs[1] in steps, steps
    quick = [
        "ruff check .",
        "ruff format --check .",
        "mypy",
        "lint-imports",
        'python -m pytest -m "not slow" -q',
    ]
    at = [steps.index(step) for step in quick]
    assert at == sorted(at) and at[0] > steps.index("python -m " + installs[1]), steps
    tests = [line for line in fenced if line.startswith("python -m pytest")]
    assert tests[0] == "python -m pytest" == steps[-1], (tests, steps)  # the whole suite, last
    assert all(t == tests[0] or t.startswith('python -m pytest -m "not slow"') for t in tests), tests
