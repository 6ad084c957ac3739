"""The built-in plugins use only what `trainer_core` exports, as a third-party plugin must; the
names a plugin author touches are documented; no engine module names a reporter's file."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import trainer_core

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FILES = sorted((REPO / "plugins").rglob("*.py"))


def trainer_core_imports(path: Path):
    """(line, module, names) of every import of trainer_core or its submodules in a file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "trainer_core":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trainer_core":
                    yield node.lineno, alias.name, []


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_built_in_plugins_import_only_what_trainer_core_exports(path):
    exported = set(trainer_core.__all__)
    for line, module, names in trainer_core_imports(path):
        where = f"{path.relative_to(REPO)}:{line}"
        assert module == "trainer_core", (
            f"{where} imports {module}; plugins use `from trainer_core import ...`"
        )
        unknown = [n for n in names if n not in exported]
        assert not unknown, f"{where} imports {unknown}, which trainer_core does not export (__all__)"


def test_the_check_sees_a_plugin_that_reaches_inside(tmp_path):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("from trainer_core.pipeline import run_pair\nfrom trainer_core import hookimpl, _secret\n")
    found = list(trainer_core_imports(bad))
    assert found[0][1] == "trainer_core.pipeline"
    assert "_secret" not in trainer_core.__all__ and found[1][2] == ["hookimpl", "_secret"]


def test_every_export_is_documented():
    missing = []
    for name in trainer_core.__all__:
        value = getattr(trainer_core, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            if not (value.__doc__ or "").strip():
                missing.append(name)
    assert missing == []


@pytest.mark.parametrize(
    "cls_name", ["ArtifactWriter", "PairResult", "PairData", "Balance", "PairModel", "BatchReport"]
)
def test_public_methods_a_plugin_author_calls_are_documented(cls_name):
    cls = getattr(trainer_core, cls_name)
    undocumented = [
        name
        for name, member in vars(cls).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not ((member.fget if isinstance(member, property) else member).__doc__ or "").strip()
    ]
    assert undocumented == [], f"{cls_name}: {undocumented}"


def test_testing_helpers_are_documented():
    import trainer_core.testing as testing

    for name in (
        "registered_plugin",
        "tiny_spec",
        "training_ready_frame",
        "write_training_ready",
        "training_ready_name",
    ):
        assert (getattr(testing, name).__doc__ or "").strip(), name


def test_no_engine_module_names_a_reporter_file():
    pattern = re.compile(r"confusion_matrix_|trading_")
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for p in (REPO / "trainer_core").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
