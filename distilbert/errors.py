"""The one exception a user mistake raises: the CLI prints it as one line, the server as a 4xx."""


class UserError(Exception):
    """Bad input from the user: a missing model, a text without [MASK], a corrupt file.

    The message names the problem and what to do about it, on one line.
    """


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's first non-empty line, for a one-line message (its type's name when it has no text)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


class MissingHead(UserError):
    """A checkpoint without the head a task needs: `has` is the head it has (a task name), `wanted` the task asked
    for. Callers that need one head (training a masked LM) catch it by type and say what to give instead."""

    def __init__(self, message: str, has: str | None = None, wanted: str | None = None):
        super().__init__(message)
        self.has, self.wanted = has, wanted


def check_writable(path, flag: str, example: str = "") -> None:
    """A file an option names can be written: not a folder, in a folder that exists (checked before the work)."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name" + (f" such as {example}" if example else ""))
    if not path.parent.exists():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
