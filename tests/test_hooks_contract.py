"""Meta-tests that keep the hook contract, its reference page and its tests in step."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from trainer_core import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "hooks.md"
TESTS = Path(__file__).resolve().parent

HOOKS = {
    name: func
    for name, func in vars(hookspecs).items()
    if name.startswith("trainer_") and inspect.isfunction(func)
}


def signature(name: str) -> str:
    """``trainer_register_loaders(register)``: the name and parameter names as in the hookspec
    (its type hints are checked separately)."""
    return f"{name}({', '.join(inspect.signature(HOOKS[name]).parameters)})"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hookspec_has_type_hints(name):
    sig = inspect.signature(HOOKS[name])
    missing = [p for p, param in sig.parameters.items() if param.annotation is inspect.Parameter.empty]
    assert not missing, f"{name}: no type hint on {missing}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type hint"


def doc_sections() -> dict[str, str]:
    """The text under each ``#``-heading of docs/hooks.md whose title is a ``trainer_`` name."""
    sections: dict[str, str] = {}
    current = None
    for line in HOOKS_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{1,6}\s+`?(\w+)`?\s*$", line)
        if heading or re.match(r"^#{1,6}\s", line):
            current = heading.group(1) if heading and heading.group(1).startswith("trainer_") else None
            if current is not None:
                sections[current] = ""
            continue
        if current is not None:
            sections[current] += line + "\n"
    return sections


def test_the_hookspecs_module_defines_hooks():
    # guards the other tests against passing vacuously
    assert "trainer_register_loaders" in HOOKS and "trainer_keras_callbacks" in HOOKS
    assert len(HOOKS) >= 11


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_is_documented_with_its_exact_signature(name):
    sections = doc_sections()
    assert name in sections, f"docs/hooks.md has no section headed {name}"
    assert f"`{signature(name)}`" in sections[name], (
        f"the {name} section of docs/hooks.md does not show the exact signature `{signature(name)}`"
    )


def test_the_doc_names_no_hook_that_does_not_exist():
    text = HOOKS_DOC.read_text(encoding="utf-8")
    headed = set(doc_sections())
    assert headed - set(HOOKS) == set(), (
        f"docs/hooks.md documents hooks that do not exist: {headed - set(HOOKS)}"
    )
    # any hook-shaped name anywhere on the page (signatures, examples, prose) must be a real hook
    mentioned = set(re.findall(r"\btrainer_(?:register|before|after|on|keras)_\w+", text))
    assert mentioned - set(HOOKS) == set(), (
        f"docs/hooks.md names unknown hooks: {sorted(mentioned - set(HOOKS))}"
    )
    called = set(re.findall(r"\b(trainer_\w+)\(", text))
    assert called - set(HOOKS) == set(), f"docs/hooks.md calls unknown hooks: {sorted(called - set(HOOKS))}"


def test_the_doc_keeps_the_phase_order_of_the_hookspecs_file():
    order_in_spec = list(HOOKS)  # module attribute order is definition order
    order_in_doc = list(doc_sections())
    assert order_in_doc == order_in_spec


def test_the_doc_covers_the_environment_variables_and_protocols():
    text = HOOKS_DOC.read_text(encoding="utf-8")
    for needle in (
        "TRAINER_LOAD_PLUGINS",
        "TRAINER_TRACE_PLUGINS=1",
        "`load(spec) -> Candles | PairData`",
        "`balance(labels, target_idx, rng, params) -> Balance`",
        "`build(input_shape, n_classes, params)`",
        "`check(params)`",
        "`report_pair(result, out)`",
        "`report_batch(batch)`",
    ):
        assert needle in text, f"docs/hooks.md does not mention {needle}"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_is_callable_on_an_empty_manager(name):
    pm = pluggy.PluginManager("trainer")
    pm.add_hookspecs(hookspecs)
    kwargs = {arg: None for arg in inspect.signature(HOOKS[name]).parameters}
    assert getattr(pm.hook, name)(**kwargs) == []


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_test_hook_test(name):
    pattern = re.compile(rf"^\s*def\s+test_hook_{name}\s*\(", re.MULTILINE)
    files = [p for p in sorted(TESTS.rglob("*.py")) if pattern.search(p.read_text(encoding="utf-8"))]
    assert files, f"no `def test_hook_{name}(` in any file under tests/"
