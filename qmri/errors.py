"""Exceptions raised for bad input.

Every error a user can cause by handing qmri a bad file or option is a :class:`QMRIInputError`.
Its message is one line that names the file (or option) and the problem; the command line prints
that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

from pathlib import Path


class QMRIInputError(ValueError):
    """Bad input: a file, sidecar, label map, option or config value qmri cannot use.

    Parameters
    ----------
    message : str
        What is wrong, in one line.
    path : str or Path, optional
        The file (or config key) concerned; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = message
        text = message if path is None else f"{path}: {message}"
        super().__init__(text)
