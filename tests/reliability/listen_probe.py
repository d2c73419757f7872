"""Start Ray exactly as ``search.run`` does (``search.tuner.init_ray``, dashboard on) and print every listening inet
socket of the driver and its Ray processes as JSON lines: pid, process name, ip, port. Run in its own session and
TMPDIR."""

from __future__ import annotations

import json
import time

from search.tuner import init_ray

init_ray(None, True, 1)
import psutil  # noqa: E402 - from ray/thirdparty_files, on sys.path once ray is imported

time.sleep(3)  # the agents bind after ray.init returns
me = psutil.Process()
for proc in [me, *me.children(recursive=True)]:
    try:
        name = " ".join(proc.cmdline())  # whole: a long venv path must not cut off the script
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                print(json.dumps({"pid": proc.pid, "name": name, "ip": conn.laddr.ip, "port": conn.laddr.port}))
    except psutil.Error:
        continue
print("DONE", flush=True)
