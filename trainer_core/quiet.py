"""What reaches the terminal: TensorFlow's and Ray's start-up noise is dropped from standard error
unless the user asked for it (`--debug`, `-v/--verbose`, or TRAINER_VERBOSE=1)."""

from __future__ import annotations

import os
import re
import sys
import threading

#: "1" keeps every line on standard error (set by --debug and -v; forwarded to batch workers)
VERBOSE_ENV = "TRAINER_VERBOSE"

#: lines nobody running the trainer can act on: absl's start-up banner, TensorFlow's C++ info and
#: warning lines (``I0000 00:00:… file.cc:12] …``), and the errors a CPU-only machine always prints
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\]"
    r"|E\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\] (?:failed call to cuInit|Unable to register cu\w+ factory"
    r"|computation placer already registered)"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|WARNING:absl:"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|authentication_token_setup\.py:\d+ -- "
)


def verbose() -> bool:
    """True when the user asked to see everything."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class StderrFilter:
    """File descriptor 2 through a pipe; a thread passes on every line but the noise.

    C++ libraries write to fd 2 directly, so filtering `sys.stderr` would miss them. `stop()`
    flushes what is left and puts the original fd 2 back.
    """

    def __init__(self):
        self._saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        sys.stderr.flush()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read = read_fd
        self._thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with os.fdopen(self._read, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._emit(line + b"\n")
            if pending:
                self._emit(pending)

    def _emit(self, line: bytes) -> None:
        if NOISE.search(line.decode("utf-8", "replace")):
            return
        try:
            os.write(self._saved, line)
        except OSError:
            pass

    def stop(self) -> None:
        """Flush and restore fd 2 (the pump ends when the pipe's last writer closes)."""
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(self._saved, 2)  # closes the pipe's write end held as fd 2
        self._thread.join(timeout=2)


def quiet_stderr() -> StderrFilter | None:
    """Start filtering fd 2 unless the user asked for every line; None when nothing was started."""
    if verbose():
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return StderrFilter()
    except OSError:  # no fd 2 to filter (a detached process): nothing to hide either
        return None
