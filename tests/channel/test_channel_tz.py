"""The liveness tests again, in processes whose local zone is far from UTC (both zones at once,
to keep the suite short)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ZONES = ("Asia/Tokyo", "America/Los_Angeles")


def test_liveness_under_far_timezones(tmp_path: Path) -> None:
    runs: dict[str, subprocess.Popen[str]] = {}
    for i, zone in enumerate(ZONES):
        env = {**os.environ, "TZ": zone}
        offset = subprocess.run(
            [sys.executable, "-c", "import time; print(time.strftime('%z'))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert offset not in ("+0000", "-0000", ""), f"TZ={zone} not applied"
        runs[zone] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--basetemp",
                str(tmp_path / f"run{i}"),
                "tests/channel/test_channel_liveness.py",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for zone, proc in runs.items():
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"TZ={zone}:\n{output[-4000:]}"
        assert " passed" in output and "failed" not in output, f"TZ={zone}:\n{output[-4000:]}"
