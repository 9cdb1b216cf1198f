"""Load tests: Locust in a subprocess, raw per-request samples, exact percentiles, k6-style thresholds.

``plan`` selects scenarios, ``run_plan`` runs them and yields ``CheckResult`` verdicts, ``charts``
draws latency over time, ``stats`` holds the percentile definition and its confidence interval,
``gates`` judges a threshold over a run's evidence (PASS / FAIL / INDETERMINATE). Nothing here
imports locust.
"""

from harness.load.gates import Evidence, Judgement, evaluate
from harness.load.plan import ScenarioOutcome, plan, run_plan
from harness.load.runner import LoadError, LoadRun, run_scenario
from harness.load.samples import Sample, merge_samples, read_samples
from harness.load.scenarios import SCENARIOS, Scenario, select_scenarios
from harness.load.stats import measure, percentile, percentile_interval, table
from harness.load.thresholds import Threshold, ThresholdError, parse_threshold, parse_thresholds

__all__ = ["Evidence", "Judgement", "evaluate", "percentile_interval", "ScenarioOutcome", "plan", "run_plan", "LoadError", "LoadRun", "run_scenario", "Sample",
           "merge_samples", "read_samples", "SCENARIOS", "Scenario", "select_scenarios", "measure",
           "percentile", "table", "Threshold", "ThresholdError", "parse_threshold", "parse_thresholds"]
