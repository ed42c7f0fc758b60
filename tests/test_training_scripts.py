"""The shell helpers the training scripts share (scripts/checkpoints.sh): which checkpoint a run
resumes or is evaluated from, and the step a phased run has reached."""
import subprocess
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "scripts" / "checkpoints.sh"


def call(function: str, out: Path) -> subprocess.CompletedProcess:
    """Run one helper as the scripts do: under `set -euo pipefail`, where a failing `ls` would stop them."""
    script = f'set -euo pipefail; shopt -s inherit_errexit; source "{HELPERS}"; result=$({function} "$1"); echo "$result"'
    return subprocess.run(["bash", "-c", script, "_", str(out)],
                          capture_output=True, text=True)


def test_empty_run_is_step_zero_and_has_no_checkpoint(tmp_path: Path):
    assert call("checkpoint_step", tmp_path).stdout.strip() == "0"
    assert call("newest_checkpoint", tmp_path).stdout.strip() == ""
    missing = call("last", tmp_path)
    assert missing.returncode != 0
    assert str(tmp_path) in missing.stderr


@pytest.mark.parametrize("steps, newest", [([250], 250), ([250, 1000, 750], 1000), ([9, 10], 10)])
def test_newest_checkpoint_is_the_highest_step(tmp_path: Path, steps, newest):
    for step in steps:
        (tmp_path / f"checkpoint_{step:08d}.pt").touch()
    (tmp_path / "model.pt").touch()  # not a checkpoint
    assert call("checkpoint_step", tmp_path).stdout.strip() == str(newest)
    assert call("last", tmp_path).stdout.strip() == str(tmp_path / f"checkpoint_{newest:08d}.pt")


def test_leading_zeros_are_not_octal(tmp_path: Path):
    (tmp_path / "checkpoint_00000800.pt").touch()  # "00000800" as octal would fail in bash arithmetic
    assert call("checkpoint_step", tmp_path).stdout.strip() == "800"
