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


@pytest.fixture
def two_languages(tmp_path, monkeypatch):
    """A folder with lessons/ and lessons/zh/, as the repository has, as the current folder."""
    (tmp_path / "lessons" / "zh").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    monkeypatch.delenv("SDVIZ_LANG", raising=False)
    return tmp_path


def test_lang_picks_the_lessons_folder_and_the_kernels_language(two_languages, no_exec):
    for argv, folder, env_lang in (
        (["--lang", "zh", "--no-browser"], "lessons/zh", "zh"),
        (["--no-browser", "--lang=en"], "lessons", "en"),
        (["--no-browser"], "lessons", None),  # no --lang: English, SDVIZ_LANG left alone
    ):
        no_exec.clear()
        assert lab.main(argv) == 0
        ((command, env),) = no_exec
        assert command[-2:] == ["--no-browser", folder], argv  # --lang is not jupyter's
        assert env.get("SDVIZ_LANG") == env_lang, argv
    named, _ = lab.lab_command(["elsewhere"], root=False, lang="zh")
    assert named[-1] == "elsewhere"  # a folder named on the command line still wins


def test_the_course_language_of_the_environment_picks_the_folder(
    two_languages, monkeypatch, no_exec
):
    monkeypatch.setenv("SDVIZ_LANG", "zh")
    assert lab.main(["--no-browser"]) == 0
    ((command, env),) = no_exec
    assert command[-1] == "lessons/zh" and env["SDVIZ_LANG"] == "zh"


def test_an_unknown_language_is_a_usage_error(two_languages, no_exec, capsys):
    for argv in (["--lang", "fr"], ["--lang"], ["--lang="]):
        assert lab.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "--lang takes one of en, zh" in err, err
    assert no_exec == []  # nothing started
    assert lab.main(["--lang", "zh", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--lang" in out and str(two_languages / "lessons" / "zh") in out
