"""pyproject.toml, environment.yml, README and .ci/run agree (no conda needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "pyyaml": "pyyaml"}
NEVER = {"torchvision", "open-clip-torch", "timm"}  # they break the CPU torch wheel


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _pypi_deps() -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    return {_norm(r.name): r.specifier for r in reqs}


def _conda_deps() -> tuple[dict[str, str], list[str]]:
    """({normalised pypi name: conda spec}, pip entries); python and pip left out."""
    deps, pip = {}, []
    for entry in _environment()["dependencies"]:
        if isinstance(entry, dict):
            pip += entry.get("pip", [])
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", entry.strip())
        assert m, f"cannot parse conda dependency {entry!r}"
        name, spec = _norm(m.group(1)), m.group(2).replace(" ", "")
        if name in ("python", "pip"):
            continue
        deps[CONDA_TO_PYPI.get(name, name)] = spec
    for entry in pip:  # pip-only packages (not on conda-forge) count as declared too
        line = entry.split("#")[0].strip()
        if line and not line.startswith("-") and line != ".":
            req = Requirement(line)
            deps[_norm(req.name)] = str(req.specifier)
    return deps, pip


def test_dependency_names_agree():
    pypi, (conda, _) = _pypi_deps(), _conda_deps()
    only_pypi, only_conda = sorted(set(pypi) - set(conda)), sorted(set(conda) - set(pypi))
    assert not only_pypi and not only_conda, (
        f"environment.yml lacks {only_pypi}; pyproject.toml lacks {only_conda} "
        "(conda's pytorch is pip's torch)."
    )


def test_version_ranges_agree():
    pypi, (conda, _) = _pypi_deps(), _conda_deps()
    for name, spec in conda.items():
        conda_spec = SpecifierSet(spec.replace("=", "==") if re.match(r"^=[^=]", spec) else spec)
        assert conda_spec == pypi[name], (
            f"{name}: environment.yml {spec!r} vs pyproject {pypi[name]}"
        )


def test_environment_basics():
    env = _environment()
    assert env["channels"] == ["conda-forge"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = python.split("=")[-1]
    assert version == "3.11"
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version)
    _, pip = _conda_deps()
    assert any(p.strip() in ("-e .", ".") for p in pip), "the pip section must install sdviz"


def test_no_torchvision_anywhere():
    project = _pyproject()["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    names = {_norm(Requirement(r).name) for r in project["dependencies"] + extras}
    names |= set(_conda_deps()[0])
    assert not names & NEVER


def test_torch_range_accepts_the_cpu_wheel():
    assert _pypi_deps()["torch"].contains("2.13.0")


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    blocks = [b.strip() for b in _bash_blocks((ROOT / "README.md").read_text())]
    assert len(blocks) >= 2
    main, tests = blocks[0], blocks[1]
    assert "\n" not in main and "\n" not in tests, "each command is one copy-paste line"
    assert "pip install -e ." in main and "sdviz trace" in main
    assert 'pip install -e ".[test]"' in tests and tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().replace(" -q", "")
    assert tests in ci, ".ci/run must run the README's test command"
    assert "exit 1" in ci and '"$rc" -eq 5' in ci  # pytest's "no tests collected" fails CI
