"""The single exception type the data layer raises for user-fixable problems.

Every message is one line that names the offending config field (``dataset.<key>``)
and says how to fix it, so a failed run tells the user what to change instead of
showing a traceback from inside torchvision, gzip or pickle.
"""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset could not be loaded because of the config or the files on disk.

    Subclasses ``ValueError`` so callers that already treat bad configuration as a
    ``ValueError`` keep working.
    """

    def __init__(self, message: str) -> None:
        # Collapse any embedded newlines (e.g. from a wrapped library error) so the
        # message stays on one line in logs and CLI output.
        super().__init__(" ".join(str(message).split()))
