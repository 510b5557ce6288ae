"""`python -m sdviz.lab`: JupyterLab on the lessons, English or (`--lang zh`) Chinese (the
command is `sdviz.commands.lab`)."""

from sdviz.commands.lab import CONFIG_DIR, lab_env, main  # noqa: F401  (public names)

if __name__ == "__main__":
    raise SystemExit(main())
