"""Tool server: ``POST /tools/read_file`` on a file inside the sandbox.

``LOAD_TOOLS_FILE`` names the file (default ``README.md``); ``LOAD_API_KEY`` is sent as a bearer
token and as ``X-API-Key``. By hand::

    LOAD_API_KEY=sk_suite_... locust -f load/tools_read_file.py --host http://127.0.0.1:8020
"""

from __future__ import annotations

import os

from _common import API_KEY, checked_post, service_url
from locust import FastHttpUser, constant_throughput, task

PATH = os.environ.get("LOAD_TOOLS_FILE", "README.md")
# The tool server limits each key to settings.tools.rate_limit_per_minute calls per tool (60 by
# default); paced at 0.4 calls/s per user, two users stay under it, so the test measures latency,
# not the limiter. Raise it together with the limit.
PER_USER_RPS = float(os.environ.get("LOAD_TOOLS_RPS", "0.4"))


class ToolsReadFile(FastHttpUser):
    host = service_url("tools")
    wait_time = constant_throughput(PER_USER_RPS)
    network_timeout = 60.0

    @task
    def read_file(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "X-API-Key": API_KEY} if API_KEY else {}
        checked_post(self, "/tools/read_file", {"path": PATH}, name="tools read_file", headers=headers)
