"""Run a command on a new pseudo-terminal, as a user's shell would: its output is copied to our stdout,
and each byte on our stdin is typed on the terminal (b"\\x03" is Ctrl-C: SIGINT to the foreground group).

    python tests/jobs/on_terminal.py COMMAND [ARG...]

Exits with the command's exit code. The terminal is 160 columns by 40 lines.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios

COLUMNS, LINES = 160, 40


def main(argv: list[str]) -> int:
    pid, master = pty.fork()
    if pid == 0:  # the child: session leader with the terminal as its controlling tty
        os.execvp(argv[0], argv)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    stdin = sys.stdin.fileno()
    inputs = [master, stdin]
    while True:
        ready, _, _ = select.select(inputs, [], [], 0.1)
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command and everything on the terminal exited
                data = b""
            if not data:
                break
            os.write(sys.stdout.fileno(), data)
        if stdin in ready:
            typed = os.read(stdin, 1)
            if typed:
                os.write(master, typed)
            else:
                inputs.remove(stdin)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
