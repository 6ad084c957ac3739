"""What `trainer batch` refuses before it starts Ray, and what a manifest's `plugins:` may import;
none of these tests trains or starts Ray (the quick loop runs them)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from trainer_core.manifest import load_manifest
from trainer_core.plugins import Plugins

REPO = Path(__file__).resolve().parents[1]


def two_cpus_no_gpu() -> dict:
    """The environment of a 2-core machine without GPUs, whatever this machine has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(TRAINER_RAY_NUM_CPUS="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def test_all_pairs_on_a_two_core_machine_exits_2_at_once_naming_the_resources():
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", "manifests/all_pairs.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=two_cpus_no_gpu(),
        timeout=60,
    )
    assert time.monotonic() - started < 20
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # nothing submitted, no table
    (error, hint) = proc.stderr.strip().splitlines()
    assert error.startswith(
        "Error: BTCUSDT, ETHUSDT, BNBUSDT, SOLUSDT, XRPUSDT and 37 more each ask for 4 CPU(s) "
        "and 0.5 GPU(s) on one node, but the largest node of this machine has 2 CPU(s) and 0 "
        "GPU(s)"
    ), error
    assert hint.startswith("Hint: Ask for what a node has: --set resources.cpus=2 --set resources.gpus=0"), (
        hint
    )


def test_dry_run_lists_missing_data_and_impossible_resources_per_pair(tmp_path):
    doc = yaml.safe_load((REPO / "manifests" / "all_pairs.yaml").read_text())
    doc["output"] = str(tmp_path / "out")
    doc["defaults"]["data"]["path"] = str(tmp_path / "no-inputs")
    doc["pairs"] = ["BTCUSDT", {"pair": "ETHUSDT", "resources": {"cpus": 1, "gpus": 0}}]
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest), "--dry-run"],
        capture_output=True,
        text=True,
        env=two_cpus_no_gpu(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    btc, eth = (
        lines.index("  BTCUSDT        would train: no completed run"),
        lines.index("  ETHUSDT        would train: no completed run"),
    )
    btc_problems, eth_problems = lines[btc + 1 : eth], lines[eth + 1 :]
    assert any("problem: BTCUSDT asks for 4 CPU(s) and 0.5 GPU(s) on one node" in p for p in btc_problems)
    assert any(f"problem: BTCUSDT: data path not found: {tmp_path / 'no-inputs'}" in p for p in btc_problems)
    assert len(eth_problems) == 1 and "problem: ETHUSDT: data path not found" in eth_problems[0], eth_problems
    assert "Error: The batch would not start: BTCUSDT asks for 4 CPU(s)" in proc.stderr
    assert not (tmp_path / "out").exists()


def write_plugin(folder: Path) -> Path:
    """A manifest plugin whose import leaves a file behind (so a test sees whether it was imported)."""
    flag = folder / "imported.flag"
    (folder / "sneaky_plugin.py").write_text(
        f"from pathlib import Path\nPath({str(flag)!r}).write_text('x')\n"
    )
    return flag


def test_no_manifest_plugins_refuses_to_import_the_manifests_modules(tmp_path, trainer, monkeypatch):
    flag = write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "output": str(tmp_path / "out"),
                "plugins": ["sneaky_plugin"],
                "defaults": {"data": {"loader": "synthetic"}},
                "pairs": ["ETHUSDT"],
            }
        )
    )
    for args in (
        ("validate", manifest, "--no-manifest-plugins"),
        ("plugins", "--manifest", manifest, "--no-manifest-plugins"),
        ("--no-manifest-plugins", "batch", manifest, "--dry-run"),
        ("run", "--manifest", manifest, "--index", "0", "--no-manifest-plugins", "--config-test"),
    ):
        result = trainer(*args)
        assert result.exit_code == 2, (args, result.output)
        assert (
            "The manifest names plugin module 'sneaky_plugin', and importing manifest plugins is turned off"
            in result.output
        ), result.output
        assert "Hint: " in result.output
        assert not flag.exists(), f"{args} imported the module"
    monkeypatch.setenv("TRAINER_MANIFEST_PLUGINS", "0")
    result = trainer("validate", manifest)
    assert result.exit_code == 2 and "TRAINER_MANIFEST_PLUGINS=0" in result.output, result.output
    assert not flag.exists()
    monkeypatch.delenv("TRAINER_MANIFEST_PLUGINS")
    result = trainer("validate", manifest)  # and without the refusal, validate does import it
    assert result.exit_code == 0, result.output
    assert flag.exists()


def test_code_fingerprint_names_every_component_and_hashes_manifest_modules(tmp_path, monkeypatch):
    from trainer_core.version import __version__

    (tmp_path / "fp_plugin.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "plugins": ["fp_plugin"], "pairs": ["ETHUSDT"]}))
    spec = load_manifest(manifest).resolve("ETHUSDT")
    plugins = Plugins.load(["fp_plugin"], load_entry_points=False)
    fingerprint = plugins.code_fingerprint(spec)
    digest = hashlib.sha256((tmp_path / "fp_plugin.py").read_bytes()).hexdigest()
    assert fingerprint["trainer"] == __version__
    assert fingerprint["plugin fp_plugin"] == f"fp_plugin sha256:{digest}"
    built_in = {
        "loader training-ready",
        "balancer undersample",
        "model lstm",
        *(f"reporter {name}" for name in spec.reporters),
    }
    assert built_in <= set(fingerprint), fingerprint
    for key, origin in fingerprint.items():  # every built-in component: this distribution and version
        if key not in ("trainer", "plugin fp_plugin"):
            assert origin == f"pair-trainer {__version__}", (key, origin)
