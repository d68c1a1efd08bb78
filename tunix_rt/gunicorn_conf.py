"""gunicorn settings for the web process.

    gunicorn -c python:tunix_rt.gunicorn_conf tunix_rt.wsgi

Threaded workers keep HTTP connections alive (pollers and API clients reuse them); the worker
class also measures how long each request waited for a thread, which load shedding uses
(runs/shedding.py). Each worker process listens on its own SO_REUSEPORT socket so the kernel
spreads connections across processes (a shared socket lets one process take most keep-alive
connections). Every value can be overridden from the environment or the command line.
"""

from __future__ import annotations

import os

bind = os.environ.get("TUNIX_WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)))
worker_class = "tunix_rt.gunicorn_worker.QueueTimedThreadWorker"
threads = int(os.environ.get("TUNIX_WEB_THREADS", "4"))
reuse_port = True
keepalive = 5
backlog = 2048
# A request that takes longer than this is a bug or a stuck database: the worker is recycled.
timeout = 60
graceful_timeout = 30
# Recycling bounds slow memory growth; jitter keeps the workers from restarting together. A
# restart costs a process about a second of CPU (it imports the app again) and resets its
# kept-alive connections, so it must stay rare at full load: at 20,000 a process serving 1,500
# requests a second restarted every 13 s. Memory stays flat over a 20-minute soak
# (docs/PERFORMANCE_BASELINE.md), so this is a backstop, not a routine.
max_requests = 1_000_000
max_requests_jitter = 100_000
forwarded_allow_ips = os.environ.get("TUNIX_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("TUNIX_WEB_ACCESS_LOG") or None
# Builds only the access-log fields the format names (gunicorn's builds all of them per request).
logger_class = "tunix_rt.gunicorn_logging.AccessLogger"
errorlog = "-"
loglevel = os.environ.get("TUNIX_WEB_LOG_LEVEL", "info")
