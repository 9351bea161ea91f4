"""The command lines, one module per command, each a `main(argv)` over one package function.

`python -m audience.cli.<name>` runs one (installed: the console script `audience-<name>`); the
files in the repository's scripts folder are thin wrappers that keep the README's commands.
The library never runs them: the Train tab's torchrun job starts `python -m audience.cli.train`.
"""
