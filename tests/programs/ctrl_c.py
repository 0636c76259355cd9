"""Presses Ctrl-C on a real terminal: runs argv[1:] (rocm-fix-run and its
command) on a new pseudo-terminal as the foreground job, waits for the line
"ready", writes the terminal's interrupt character (^C), and prints what the
terminal showed and the exit status."""
import os
import pty
import sys
import time

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
deadline = time.time() + 10
while b"ready" not in out and time.time() < deadline:
    try:
        out += os.read(fd, 1024)
    except OSError:
        break
os.write(fd, b"\x03")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
print("exit", os.waitstatus_to_exitcode(status))
