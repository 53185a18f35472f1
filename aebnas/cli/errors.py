"""How every entry point reports a user's mistake: one line, ``prog: error: ...``, no traceback.

Torch-free, so ``aebnas-report`` (which reads files only) can use it without
loading the rooms that train networks; ``cli.common`` adds their error types.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from aebnas.space import GenomeError
from aebnas.config_checks import ConfigError

BASE_USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, GenomeError, FileNotFoundError, FileExistsError)


@contextmanager
def one_line_errors(prog: str, errors: tuple[type[BaseException], ...] = BASE_USER_ERRORS) -> Iterator[None]:
    """Turn one of ``errors`` into ``prog: error: <one line>`` and exit status 2, no traceback (unless
    ``AEBNAS_TRACEBACK`` is set); a failing machine (OS error, a killed worker) exits with status 3."""
    try:
        yield
    except errors as exc:
        if os.environ.get("AEBNAS_TRACEBACK"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # disk full, data gone, the Dask cluster lost: the archive is intact
        if os.environ.get("AEBNAS_TRACEBACK"):
            raise
        print(f"{prog}: error: the machine failed, not a candidate ({type(exc).__name__}: {exc}); finished "
              "evaluations are safe in the run's archive.sqlite: fix the cause and continue with resume=<run dir>",
              file=sys.stderr)
        sys.exit(3)
