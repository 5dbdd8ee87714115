"""Run a framework's own tests against its sessiondb adapter: ``python -m integrations.run NAME``.

Run by the framework's environment (``make integrations``). The framework's sdist, at the
version pinned in ``requirements-<NAME>.txt``, is fetched from the package index with pip (into
``.integrations-cache/``, never committed), its tests are unpacked and run from the sdist's own
root — its own pytest configuration and conftest — with the plugin of
:mod:`integrations.fixtures` loaded first. Excluded tests are deselected, each with its reason
in :mod:`integrations.suites`; the summary line counts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .suites import SUITES, Suite

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".integrations-cache"


def pinned(suite: Suite) -> str:
    """The version ``requirements-<name>.txt`` pins for the suite's distribution."""
    for line in (ROOT / "integrations" / f"requirements-{suite.name}.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == suite.dist:
            return version.strip()
    raise SystemExit(f"requirements-{suite.name}.txt pins no version of {suite.dist}")


def sources(suite: Suite, version: str) -> Path:
    """The unpacked sdist of ``suite.dist==version``, fetched once."""
    where = CACHE / f"{suite.dist}-{version}"
    if (where / ".complete").exists():
        return where
    CACHE.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(CACHE),
            f"{suite.dist}=={version}",
        ],
        check=True,
    )
    stem = suite.dist.replace("-", "_")
    archive = next(
        p
        for p in CACHE.glob(f"*-{version}.tar.gz")
        if p.name.lower().replace("-", "_").startswith(stem.lower() + "_")
    )
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(CACHE, filter="data")
    unpacked = CACHE / top
    if unpacked != where:
        if where.exists():
            subprocess.run(["rm", "-rf", str(where)], check=True)
        unpacked.rename(where)
    (where / ".complete").touch()
    return where


def main(argv: list[str]) -> int:
    suite = SUITES.get(argv[0])
    if suite is None:  # LangGraph (its published conformance package), ADK (ours, no sdist tests)
        test = f"integrations/tests/test_{argv[0].replace('-', '_')}.py"
        print(f"{argv[0]}: no test files in its sdist; its suite is {test}")
        return 0
    version = pinned(suite)
    root = sources(suite, version)
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        suite.plugin,
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        *suite.files,
    ]
    for test, _reason in suite.excluded.items():
        args += ["--deselect", test]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(root)])}
    print(f"{suite.dist}=={version}: {' '.join(suite.files)}; {len(suite.excluded)} excluded")
    return subprocess.run([*args, *argv[1:]], cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
