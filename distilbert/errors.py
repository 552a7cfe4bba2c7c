"""The one exception a user mistake raises: the CLI prints it as one line, the server as a 4xx."""


class UserError(Exception):
    """Bad input from the user: a missing model, a text without [MASK], a corrupt file.

    The message names the problem and what to do about it, on one line.
    """
