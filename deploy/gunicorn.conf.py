"""gunicorn settings for serving attnviz to a team (see docs/deploy.md).

    ATTNVIZ_STORE=/srv/attnviz/stores/main.h5 ATTNVIZ_AUTH_FILE=/etc/attnviz/users \\
        gunicorn -c deploy/gunicorn.conf.py 'attnviz.dashboard.app:server'

Why these settings:

* **sync workers, one thread each**: h5py holds one global lock, so threads do not read in parallel; processes
  do (2 processes: 2.15x one). Size ``ATTNVIZ_WORKERS`` to the cores (default: cores, at most 8).
* **preload_app = False**: the app (and every HDF5 handle) is built after the fork, in each worker.
* **timeouts**: a worker silent for ``ATTNVIZ_TIMEOUT`` s (default 120; a corpus view of a big store can take
  a while) is restarted; ``graceful_timeout`` lets requests in flight finish on SIGTERM.
* **control socket off**: several instances (one per store or team) never fight over one socket file.
* **max_requests**: each worker is replaced after ~2,000 requests, which bounds the memory of its caches.
* **logs**: access log as JSON lines on stdout; the app's own JSON lines (one per callback, with its latency)
  and errors on stderr.
* **policy check at start** (``on_starting``, before any worker): the store exists, the users file reads, and
  a non-loopback bind has users, or ``ATTNVIZ_NO_AUTH=1`` (warned), unless ``ATTNVIZ_REQUIRE_AUTH=1``, which
  demands users. A bad configuration stops gunicorn with one line instead of serving.
"""

from __future__ import annotations

import os
import sys

bind = [os.environ.get("ATTNVIZ_BIND", "127.0.0.1:8050")]
workers = int(os.environ.get("ATTNVIZ_WORKERS", str(min(os.cpu_count() or 1, 8))))
worker_class = "sync"
threads = 1
preload_app = False
timeout = int(os.environ.get("ATTNVIZ_TIMEOUT", "120"))
graceful_timeout = 30
max_requests = 2000
max_requests_jitter = 200
limit_request_line = 8190
proc_name = "attnviz"
control_socket_disable = True  # gunicorn >= 25: no shared ~/.gunicorn/gunicorn.ctl between instances
accesslog = os.environ.get("ATTNVIZ_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("ATTNVIZ_LOG_LEVEL", "info")
access_log_format = (
    '{"event":"access","time":"%(t)s","remote":"%(h)s","method":"%(m)s","path":"%(U)s","query":"%(q)s",'
    '"status":%(s)s,"bytes":%(B)s,"ms":%(M)s,"pid":"%(p)s","agent":"%(a)s"}'
)


def _bind_hosts(addresses: list[str]) -> list[str]:
    """Host part of each bind address (``unix:`` sockets are local: reported as ``localhost``)."""
    hosts = []
    for address in addresses:
        if address.startswith("unix:") or address.startswith("fd://"):
            hosts.append("localhost")
            continue
        if address.startswith("["):
            host = address[1:address.find("]")]
        else:
            host = address.rsplit(":", 1)[0] if ":" in address else address
        hosts.append(host or "0.0.0.0")
    return hosts


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    """Refuse to start (one line, exit 1) on a configuration that cannot serve or would expose the store."""
    from attnviz.dashboard.security import NO_AUTH_ENV, SecurityError, check_bind, env_flag, load_auth, require_auth

    try:
        store = os.environ.get("ATTNVIZ_STORE", "")
        if not store:
            raise SecurityError("set ATTNVIZ_STORE to the store file to serve")
        if not os.path.isfile(store):
            raise SecurityError(f"ATTNVIZ_STORE={store} is not a file: run 'attnviz precompute' first or fix the path")
        data_dir = os.environ.get("ATTNVIZ_DATA_DIR", "")
        if data_dir and not os.path.isdir(data_dir):
            raise SecurityError(f"ATTNVIZ_DATA_DIR={data_dir} is not a folder")
        auth = load_auth()
        no_auth = env_flag(NO_AUTH_ENV)
        for host in _bind_hosts(list(server.cfg.bind)):
            check_bind(host, auth, no_auth=no_auth, require=require_auth())
    except SecurityError as exc:
        server.log.error("attnviz: %s", exc)
        sys.exit(1)
    if auth is None and no_auth:
        server.log.warning("attnviz: %s=1: serving %s without authentication", NO_AUTH_ENV, server.cfg.bind)
    server.log.info("attnviz: store %s, %d sync workers, auth %s", store, server.cfg.workers,
                    f"on ({auth.source})" if auth else "off")
