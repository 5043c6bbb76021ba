"""What a user gets from ``pip install .`` (not editable, no dev extras) in a fresh venv: console scripts that
find their configs inside the package and run from any directory (``make test-install``; CI runs it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nibabel as nib
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("mr2ct-train", "mr2ct-evaluate", "mr2ct-translate", "mr2ct-landmarks", "mr2ct-tables", "mr2ct-phantom")


@pytest.mark.slow
def test_package_install_gives_working_console_scripts(tmp_path: Path):
    venv = tmp_path / "venv"
    installed = subprocess.run(["make", "install-package", f"VENV={venv}"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=1800)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = subprocess.run([venv / "bin" / "python", "-c", "import mr2ct, sys; print(mr2ct.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert REPO_ROOT not in Path(site.stdout.strip()).parents  # the installed copy, not the checkout
    shipped = subprocess.run([venv / "bin" / "python", "-c", "from mr2ct.segment.phantom_unet import SHIPPED_DIR; "
                              "print(*sorted(p.name for p in SHIPPED_DIR.glob('segmenter/*/*')))"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert {"weights.pt", "segmenter.json", "heldout.json"} <= set(shipped.stdout.split()), shipped.stderr[-2000:]
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MR2CT_CACHE": str(tmp_path / "cache")}

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=600)

    for command in COMMANDS:
        helped = run(command, "--help")
        assert helped.returncode == 0 and "Traceback" not in helped.stderr, (command, helped.stderr[-2000:])
    assert "ckpt" in run("mr2ct-translate", "--help").stdout

    generated = run("mr2ct-phantom", "out_dir=phantom", "subjects=2", "progress=false")
    assert generated.returncode == 0, generated.stderr[-3000:]
    mr = nib.load(next((workdir / "phantom").glob("*/mr.nii.gz")))
    assert mr.ndim == 3 and (workdir / "phantom" / "manifest.csv").is_file()
