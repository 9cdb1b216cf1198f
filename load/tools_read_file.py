"""Tool server: ``POST /tools/read_file`` on a file inside the sandbox.

``LOAD_TOOLS_FILE`` names the file (default ``README.md``); ``LOAD_API_KEY`` is sent as a bearer
token and as ``X-API-Key``. By hand::

    LOAD_API_KEY=sk_suite_... locust -f load/tools_read_file.py --host http://127.0.0.1:8020
"""

from __future__ import annotations

from _common import SuiteUser
from locust import constant_throughput, task


class ToolsReadFile(SuiteUser):
    service = "tools"
    network_timeout = 60.0

    def wait_time(self) -> float:
        # The tool server limits each key to settings.tools.rate_limit_per_minute calls a minute, all
        # tools together (60 by default). By hand (a key others may share) two users at 0.4 calls/s
        # (LOAD_TOOLS_RPS) stay under it, so the test measures latency, not the limiter; the harness
        # mints the scenario a key of its own and sets the pace from its budget (plan.tools_pace).
        return constant_throughput(self.config.tools_rps)(self)

    @task
    def read_file(self) -> None:
        self.post_json("/tools/read_file", {"path": self.config.tools_file}, name="tools read_file")
