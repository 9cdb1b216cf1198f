"""SLOs per scenario: objectives, attainment judged with the order-statistic interval (failed requests
count against it), its exact interval, goodput, and the scenarios that carry them."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from harness.load import stats
from harness.load.gates import Evidence, evaluate
from harness.load.samples import Sample
from harness.load.scenarios import SCENARIOS, with_overrides
from harness.load.slo import parse_slo, proportion_interval, tally, verdict
from harness.load.thresholds import ThresholdError, parse_threshold
from harness.result import Status

SLO = parse_slo("ttft_p95<3s,tpot_p95<500ms,p95<15s,attainment>=95%")


def chat(ms=2000.0, ttft=400.0, itl=80.0, ok=True, start=0.0, **kw) -> Sample:
    return Sample("chat stream", start, ms, ok, ttft_ms=ttft if ok else None, itl_ms=itl if ok else None,
                  tokens=20 if ok else None, **kw)


def test_an_slo_reads_like_thresholds_with_aliases_and_refuses_what_is_no_objective():
    assert [o.metric for o in SLO.objectives] == ["ttft_p95", "itl_p95", "p95"]  # tpot = itl, e2e = bare
    assert SLO.target == 0.95 and str(SLO.attainment) == "attainment>=95%"
    assert SLO.describe() == "TTFT < 3 s, TPOT < 500 ms, e2e < 15 s for 95 % of requests"
    assert parse_slo("e2e_p99<2s").target == 0.95 and parse_slo("e2e_p99<2s").objectives[0].metric == "p99"
    assert parse_threshold("attainment>=0.9").value == 0.9 and parse_threshold("attainment>=90%").value == 0.9
    assert parse_slo("") is None
    for bad in ("fail_ratio<0.1,attainment>=95%", "tps_p50>2", "p95>1s", "attainment>=95%",
                "p95<1s,attainment>=95%,attainment>=90%", "p95<1s,attainment<=95%", "attainment>=120%"):
        with pytest.raises(ThresholdError):
            parse_slo(bad)


def test_a_request_meets_every_objective_or_misses_and_a_failure_misses_them_all():
    objectives = SLO.objectives
    assert verdict(chat(), objectives) is True
    assert verdict(chat(ttft=3500), objectives) is False
    assert verdict(chat(itl=600), objectives) is False
    assert verdict(chat(ms=16_000), objectives) is False
    assert verdict(chat(ms=5, ok=False), objectives) is False  # a fast error is no success
    assert verdict(chat(censored=True, ok=False), objectives) is False
    assert verdict(chat(itl=None), objectives) is None  # a one-token answer has no TPOT: left out
    counted = tally([chat(), chat(ttft=4000), chat(ok=False), chat(itl=None)], objectives)
    assert (counted.met, counted.missed, counted.failed, counted.undetermined) == (1, 2, 1, 1)
    assert counted.attainment == 1 / 3
    assert dict((name, (met, judged)) for name, met, judged in counted.by_objective)["ttft_p95<3s"] == (2, 4)


def test_attainment_is_judged_by_the_order_statistic_interval_and_agrees_with_clopper_pearson():
    """PASS exactly when the exact interval's lower end reaches the target, FAIL when its upper end is
    under it; checked over splits of up to 300 requests at 95 % and 90 %."""
    for target in (0.95, 0.90):
        th = parse_slo(f"p95<1s,attainment>={target * 100:g}%").attainment
        for n in (2, 20, 36, 37, 72, 73, 150, 300):
            for missed in sorted({0, 1, 2, 5, n // 10, n // 2, n} & set(range(n + 1))):
                samples = [Sample("x", i, 100.0, True) for i in range(n - missed)]
                samples += [Sample("x", i, 5000.0, True) for i in range(missed)]
                judged = evaluate(Evidence(samples), th)
                ci = binomtest(n - missed, n).proportion_ci(0.95, method="exact")
                want = Status.PASS if ci.low >= target else Status.FAIL if ci.high < target else Status.INDETERMINATE
                assert judged.status is want, (target, n, missed, judged.interval, (ci.low, ci.high))
                assert judged.interval == pytest.approx((ci.low, ci.high))


def test_failed_and_missing_requests_count_against_attainment_and_more_requests_decide_it():
    th = SLO.attainment
    good = [chat(start=i) for i in range(80)]
    assert evaluate(Evidence(good), th).status is Status.PASS  # 80 of 80 met: 0.95^80 < 2.5 %
    # the same 80 with 20 fast errors: the p95 of durations hides them, attainment does not
    failing = good + [chat(ms=1, ok=False, start=i) for i in range(20)]
    assert evaluate(Evidence(failing), parse_threshold("p95<15s")).status is Status.PASS
    judged = evaluate(Evidence(failing), th)
    assert judged.status is Status.FAIL and judged.value == 0.8 and "20 failed (counted as missed)" in judged.note
    # 20 of 100 planned never ran: missed when the time cap ended the run, open when it was aborted
    assert evaluate(Evidence(good, planned=100), th).status is Status.FAIL
    still_open = evaluate(Evidence(good, planned=100, missing_failed=False), th)
    assert still_open.status is Status.INDETERMINATE and still_open.interval[0] < 0.95 < still_open.interval[1]
    # 30 requests, all met: undecided, and the projection says how many would decide it
    short = evaluate(Evidence(good[:30]), th)
    assert short.status is Status.INDETERMINATE and short.to_decide == stats.min_samples(95) == 72


def test_goodput_counts_only_requests_that_met_every_objective_over_the_whole_window():
    samples = [chat(start=float(i)) for i in range(9)] + [chat(start=9.0, ttft=5000, ms=1000)]
    judged = evaluate(Evidence(samples), SLO.goodput)
    assert judged.status is Status.INFO and judged.value == pytest.approx(9 / 10.0)  # 9 met over 0 .. 10 s
    assert proportion_interval(0, 0) == (None, None)
    low, high = proportion_interval(9, 10, unknown=2)
    assert low < binomtest(9, 12).proportion_ci(method="exact").low + 1e-9 and high > 0.9


def test_scenarios_carry_slos_whose_attainment_is_one_more_gate_and_objectives_are_shown():
    chat_sc = SCENARIOS["chat"]
    assert [str(t) for t in chat_sc.targets()][-1] == "attainment>=95%"
    shown = {str(f) for f in chat_sc.figures()}
    assert {"ttft_p95<3s (SLO objective)", "tpot_p95<500ms (SLO objective)", "goodput"} <= shown
    assert all(not f.is_gate for f in chat_sc.figures())
    assert SCENARIOS["seed-20x2"].service_level().target == 0.93
    # an override replaces the SLO; a bad one fails before anything runs
    assert with_overrides(chat_sc, slo="p95<1s,attainment>=90%").service_level().target == 0.9
    with pytest.raises(ThresholdError):
        with_overrides(chat_sc, slo="p95>1s")
    # thresholds replace every target, the attainment gate too, unless an SLO is given with them
    assert [str(t) for t in with_overrides(chat_sc, thresholds="max<120s").targets()] == ["max<120s"]
    kept = with_overrides(chat_sc, thresholds="max<120s", slo="p95<9s,attainment>=90%")
    assert [str(t) for t in kept.targets()] == ["max<120s", "attainment>=90%"]
    poisson = SCENARIOS["chat-poisson"]
    assert poisson.open_model and "Poisson arrivals at 1 req/s (seed 1), at most 8 in flight" in poisson.load_model()
    assert SCENARIOS["seed-100x5"].load_model().startswith("closed loop: 5 user(s)")
    with pytest.raises(ValueError):
        with_overrides(chat_sc, rate=2, arrivals="bursty")
