"""What a user installs: one wheel with exactly two packages, a `trainer` command that starts fast."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_exactly_trainer_core_and_trainer_plugins(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pair_trainer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"trainer_core", "trainer_plugins"}
    assert "trainer_plugins/models/lstm.py" in names and "trainer_core/hookspecs.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "trainer = trainer_core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _modules_after(args: list[str]) -> tuple[int, set[str], str]:
    code = (
        "import sys, json\n"
        "from trainer_core.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'ray', 'matplotlib', 'sklearn'})\n"
        "print('MODULES=' + json.dumps(heavy))\n"
        "sys.exit(code or 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("MODULES="))
    return proc.returncode, set(json.loads(line[len("MODULES=") :])), proc.stdout + proc.stderr


def test_help_imports_neither_tensorflow_nor_ray():
    code, heavy, output = _modules_after(["--help"])
    assert code == 0 and "run" in output and "plugins" in output
    assert heavy == set(), f"trainer --help imported {heavy}"


def test_commands_that_do_not_train_stay_light(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\npairs: [ETHUSDT, BTCUSDT]\n")
    for args in (
        ["plugins"],
        ["validate", str(manifest)],
        ["run", "--pair", "ETHUSDT", "--config-test"],
        ["run", "-h"],
    ):
        code, heavy, output = _modules_after(args)
        assert code == 0, output
        assert heavy == set(), f"trainer {' '.join(args)} imported {heavy}"


def test_console_script_and_version():
    proc = subprocess.run(["trainer", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "trainer, version" in proc.stdout
    proc = subprocess.run(["trainer", "-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Example:" in proc.stdout
