"""The load generator's own ceiling: ``GET /health`` as fast as possible (no wait between requests).

Point it at something trivial (``benchmarks/load_generator_ceiling.py`` starts a tiny app) to learn
how many requests per second this box can generate before a latency gate would be judging Locust
rather than the service. By hand::

    locust -f load/health_ceiling.py --host http://127.0.0.1:8000 --headless -u 10 -r 10 -t 10s
"""

from __future__ import annotations

from _common import SuiteUser
from locust import task


class HealthCeiling(SuiteUser):
    service = "gateway"

    @task
    def health(self) -> None:
        self.client.get("/health", name="health", context=self.load.ticket("health"))
