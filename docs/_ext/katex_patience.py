"""Make sphinxcontrib-katex's pre-rendering server start reliably on a busy machine.

sphinxcontrib-katex (0.9.x) starts a node process that renders the math, waits for its unix
socket file to appear, then connects once. Node creates the file a moment before it
listens, so on a loaded machine the single ``connect`` can be refused and the build fails
with ``ConnectionRefusedError``. This extension connects again until the server answers (as
sphinxcontrib-katex already does for its Windows TCP variant) and gives the server and each
render more time than the default 5 s, since CI machines and laptops are often busy.
"""

from __future__ import annotations

import socket
import time
from subprocess import PIPE, Popen

from sphinxcontrib import katex

STARTUP_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 60.0


def _start_server_process(cls, rundir, timeout):
    socket_path = rundir / "katex.sock"
    process = Popen(cls.build_command(socket=socket_path), stdin=PIPE, stdout=PIPE, cwd=rundir)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise katex.KaTeXError(f"the KaTeX render server (node) exited with code "
                                   f"{process.returncode}; is node installed?")
        if socket_path.is_socket():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(str(socket_path))
                return process, sock
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()  # the file exists but node is not listening yet
            except TimeoutError:
                sock.close()
        if time.monotonic() > deadline:
            process.kill()
            raise cls.timeout_error(timeout)
        time.sleep(0.01)


def setup(app):
    katex.STARTUP_TIMEOUT = STARTUP_TIMEOUT_S
    katex.RENDER_TIMEOUT = RENDER_TIMEOUT_S
    katex.KaTeXServer.start_server_process = classmethod(_start_server_process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
