"""Running the `sinagot` command on a real pseudo-terminal, as a person would."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

SINAGOT = str(Path(sys.executable).with_name("sinagot"))


def run_on_terminal(*args: str, columns: int = 120, timeout: float = 120.0) -> tuple[int, str]:
    """``sinagot ARGS`` with a pseudo-terminal (``columns`` x 40) as stdin, stdout and stderr;
    its exit code and everything it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    try:
        process = subprocess.Popen(
            [SINAGOT, *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, b"".join(chunks).decode(errors="replace")
