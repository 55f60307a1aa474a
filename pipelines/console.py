"""A quiet console for long commands: one rich progress display and a summary on the terminal; everything
libraries print (Ray's driver and core-worker messages, Python warnings, Hugging Face progress bars) goes to a
log file that the summary names.

Ray's core worker logs from C++ straight to the process's stderr, so Python-level logging settings cannot
silence it: while a `QuietConsole` is open, file descriptor 2 itself points at the log file and the rich
console writes to a duplicate of the original terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console


class QuietConsole:
    """Context manager: `with QuietConsole(log_path) as console:` -> a rich Console on the real terminal."""

    def __init__(self, log_path: str | os.PathLike):
        self.log_path = Path(log_path)
        self._saved_fd: int | None = None

    def __enter__(self) -> Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        self._log = open(self.log_path, "a", buffering=1)
        self._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        self._saved_fd = os.dup(2)
        os.dup2(self._log.fileno(), 2)
        self._terminal = os.fdopen(os.dup(self._saved_fd), "w", buffering=1)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("default")
        logging.captureWarnings(True)
        silence_progress_bars()
        return Console(file=self._terminal, stderr=False)

    def __exit__(self, *exc) -> None:
        logging.captureWarnings(False)
        self._warnings.__exit__(*exc)
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._terminal.close()
        self._log.close()


def silence_progress_bars() -> None:
    """No tqdm bars from Hugging Face libraries (loading shards, pipelines); our own rich progress shows the work."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def log_path_for(output: str, command: str) -> Path:
    """Where a command's library log goes: OUTPUT/_logs/ for a local output folder, else the temp folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if "://" in output:
        import tempfile

        return Path(tempfile.gettempdir()) / "avatarkit-logs" / f"{command}-{stamp}.log"
    return Path(output).resolve() / "_logs" / f"{command}-{stamp}.log"
