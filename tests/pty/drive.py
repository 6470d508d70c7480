#!/usr/bin/env python3
"""Run a command in a pseudo-terminal and drive it like a person at a keyboard.

Reads a JSON script on stdin:

    {"argv": [...], "cwd": "...", "env": {"K": "V"}, "unset": ["K"],
     "rows": 40, "cols": 160,
     "steps": [{"expect": "regex", "timeout": 30}, {"send": "yes\\r"}, {"sleep": 0.5}],
     "exit_timeout": 60}

and writes one JSON object on stdout: the raw transcript (every byte the program wrote to its
terminal, base64), its exit status ("status": code, or "signal": number), and "error" when an
expectation timed out (the program is then killed). `send` writes to the terminal as typed
keys: "\\u0003" is Ctrl-C, which the terminal turns into SIGINT for the program.

Used by tests/it/terminal.rs; only the standard library.
"""

import base64
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time


def main():
    spec = json.load(sys.stdin)
    rows, cols = spec.get("rows", 40), spec.get("cols", 160)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            if spec.get("cwd"):
                os.chdir(spec["cwd"])
            env = dict(os.environ)
            for key in spec.get("unset", []):
                env.pop(key, None)
            env.update(spec.get("env", {}))
            os.execvpe(spec["argv"][0], spec["argv"], env)
        finally:
            os._exit(127)

    transcript = bytearray()
    closed = False

    def pump(timeout):
        nonlocal closed
        if closed:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                transcript.extend(data)
            else:
                closed = True

    error = None
    cursor = 0
    for step in spec.get("steps", []):
        if "expect" in step:
            pattern = re.compile(step["expect"].encode())
            deadline = time.monotonic() + step.get("timeout", 30)
            while True:
                match = pattern.search(transcript, cursor)
                if match:
                    cursor = match.end()
                    break
                if time.monotonic() > deadline or closed:
                    error = "timed out waiting for %r" % step["expect"]
                    break
                pump(0.05)
            if error:
                break
        elif "send" in step:
            os.write(fd, step["send"].encode())
        elif "sleep" in step:
            deadline = time.monotonic() + step["sleep"]
            while time.monotonic() < deadline:
                pump(min(0.05, max(0.0, deadline - time.monotonic())))

    status = None
    deadline = time.monotonic() + spec.get("exit_timeout", 60)
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
            break
        if error or time.monotonic() > deadline:
            if not error:
                error = "the program did not exit in time"
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        pump(0.05)
    # What is still buffered in the terminal.
    while not closed:
        pump(0.05)
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            break

    result = {"transcript": base64.b64encode(bytes(transcript)).decode()}
    if os.WIFEXITED(status):
        result["status"] = os.WEXITSTATUS(status)
    elif os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    if error:
        result["error"] = error
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
