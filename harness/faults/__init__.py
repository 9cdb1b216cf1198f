"""Fault drill: ``kill -9`` each service of a phase while a light load runs, and judge the recovery.

For every drilled service: the pid serving its port is killed with SIGKILL; the time until its
``/ready`` passes again is the recovery time; then every service of the phase must be ready again,
its dependants still the same processes (a restarted dependency makes them ready on its own), and
``suite status`` must show the SIGKILL and exactly one more restart. The load (Locust in a
subprocess, ``load/fault_drill.py``, through the gateway, RAG and tools) runs the whole time; the
requests that needed the killed service and overlapped its outage give the client error ratio, and
those the gateway answered from the other model show whether failover served them. A service that
is not ready again within ``give_up_s`` ends the drill: its result fails with the log tail as
evidence and no further service is killed.

``drill`` runs the kills, ``background`` the load, ``records`` holds what a kill left,
``verdicts`` turns it into a ``CheckResult``, ``charts`` draws the timeline. Nothing here imports locust or a service's code: the suite is reached
through its CLI (``harness.stack``), HTTP and the process table.

The durability drill (runbook ``06b_durability``) lives beside it: ``durability`` runs it, ``writers``
write and keep ledgers, ``kills`` kills at seeded moments, ``tally`` counts what survived.
"""

from harness.faults.charts import timeline_chart
from harness.faults.drill import FaultDrill
from harness.faults.durability import DEFAULT_PLAN, DurabilityDrill, plan_for
from harness.faults.records import ROUTES, Drill, Thresholds, affected, dependants, parse_recovery

__all__ = ["DEFAULT_PLAN", "ROUTES", "Drill", "DurabilityDrill", "FaultDrill", "plan_for", "Thresholds", "affected", "dependants", "parse_recovery",
           "timeline_chart"]
