"""Errors the CLI maps to exit codes."""


class MissingBackend(RuntimeError):
    """A backend or native library the command needs is not installed (exit code 3)."""
