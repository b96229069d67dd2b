"""Child-process entry for the managed llama.cpp server.

Runs ``llama_cpp.server`` in this process and exits as soon as the parent that started
it is gone (even after SIGKILL), so a crashed run never leaves a server behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _exit_with_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    parent_pid = int(sys.argv[1])
    sys.argv = ["llama_cpp.server", *sys.argv[2:]]
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    from llama_cpp.server.__main__ import main as serve

    from workbench.models.chat_formats import register

    register()  # chat_format: hermes-tools (streamed tool calls for the embedded models)

    serve()


if __name__ == "__main__":
    main()
