"""`python -m sdviz.lab`: the `jupyter lab` command it builds, without starting a server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sdviz.commands import lab


@pytest.fixture
def no_exec(monkeypatch):
    """Record the command main() would exec instead of replacing the test process."""
    calls = []
    monkeypatch.setattr(os, "execvpe", lambda file, argv, env: calls.append((argv, env)))
    return calls


def test_lessons_are_served_when_no_folder_is_named(tmp_path):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    command, said = lab.lab_command(["--port", "8899"], root=False, lessons=lessons)
    assert command == [sys.executable, "-m", "jupyter", "lab", "--port", "8899", str(lessons)]
    assert said == []
    named, _ = lab.lab_command([str(tmp_path)], root=False, lessons=lessons)
    assert named[-1] == str(tmp_path) and str(lessons) not in named
    missing, _ = lab.lab_command([], root=False, lessons=tmp_path / "none")
    assert missing == [sys.executable, "-m", "jupyter", "lab"]


def test_root_gets_allow_root_with_a_note(tmp_path, monkeypatch, no_exec, capsys):
    command, said = lab.lab_command([], root=True, lessons=tmp_path)
    assert command[-1] == "--allow-root" and len(said) == 1 and "root" in said[0]
    again, said = lab.lab_command(["--allow-root"], root=True, lessons=tmp_path)
    assert again.count("--allow-root") == 1 and said == []

    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    monkeypatch.chdir(tmp_path)
    lab.main(["--no-browser"])
    ((argv, env),) = no_exec
    assert "--allow-root" in argv and "--no-browser" in argv
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0] == str(lab.CONFIG_DIR)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "--allow-root" in err


def test_not_root_passes_arguments_unchanged(tmp_path, monkeypatch, no_exec):
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    monkeypatch.chdir(tmp_path)
    lab.main(["--no-browser"])
    assert no_exec[0][0][-1] == "--no-browser"


def test_help_is_sdvizs_own_then_points_to_jupyter(no_exec, capsys):
    assert lab.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m sdviz.lab")
    assert "notebooks" in out and "lessons" in out and str(lab.CONFIG_DIR) in out
    assert "jupyter lab --help" in out.splitlines()[-1]
    assert no_exec == []  # nothing started


def test_module_shim_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "sdviz.lab", "-h"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "jupyter lab --help" in done.stdout
    import sdviz.lab

    assert sdviz.lab.CONFIG_DIR == lab.CONFIG_DIR and (lab.CONFIG_DIR / "labconfig").is_dir()
