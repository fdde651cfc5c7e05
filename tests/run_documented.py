"""Run a documented command that serves until stopped, exactly as documented, and print what it serves.

Usage: ``python tests/run_documented.py URL CEILING_S [NAME...] -- COMMAND...``. Starts COMMAND, polls URL
until it answers 200 with a body naming every NAME (an exporter's first answer can precede its second
sample, before which rates, splits and job spans are absent), for at most CEILING_S seconds and not past
the command's own exit; writes that body to stdout, stops the command with SIGTERM (as systemd and Ctrl-C
do) and exits 0 if it stopped cleanly.

tests/test_docs.py runs it inside a private network namespace where the machine allows one (``unshare
-rn``), so the documented default port is the command's own, whoever else listens on it here; it then
brings the namespace's loopback up first, which needs the namespace's CAP_NET_ADMIN.
"""
from __future__ import annotations

import fcntl
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH22x"  # struct ifreq: the interface name, then ifr_flags in its 24-byte union


def loopback_up() -> None:
    """Bring loopback up where it is down (a fresh network namespace); elsewhere nothing to do."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    url, ceiling_s, *rest = argv
    names, command = rest[:rest.index("--")], rest[rest.index("--") + 1:]
    assert command, __doc__
    loopback_up()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + float(ceiling_s)
    body, last_error = None, "never tried"
    while body is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
            missing = [name for name in names if not re.search(rf"^{re.escape(name)}[{{ ]", text, re.M)]
            if missing:
                last_error = f"answered without {', '.join(missing)}"
            else:
                body = text
        except (OSError, urllib.error.URLError) as err:  # not listening yet
            last_error = str(err)
        if body is None:
            time.sleep(0.05)
    if proc.poll() is not None:
        print(f"{command}: exited with {proc.returncode} before {url} answered", file=sys.stderr)
        return 1
    proc.terminate()
    try:
        rc = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        print(f"{command}: still running 15 s after SIGTERM", file=sys.stderr)
        return 1
    if body is None:
        print(f"{url} did not answer as awaited within {ceiling_s} s: {last_error}", file=sys.stderr)
        return 1
    sys.stdout.write(body)
    return 0 if rc == 0 else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
