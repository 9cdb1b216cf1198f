"""The statistics a gate is judged by: order-statistic intervals of percentiles (ranks, coverage,
censored and missing samples, small n), the PASS / FAIL / INDETERMINATE decision, the count that
would decide a gate, no pass over zero successes, and the early loss the runner stops on."""

import math

import numpy as np
import pytest
from scipy.stats import quantile_test

from harness.load.gates import Evidence, decide, dominant_error, evaluate
from harness.load.runner import _lost
from harness.load.samples import Sample
from harness.load.stats import percentile, percentile_interval, rank_bounds, requests_to_decide
from harness.load.thresholds import parse_threshold
from harness.result import Status


def samples(durations, ok=None, censored=None, name="r"):
    ok = ok or [True] * len(durations)
    censored = censored or [False] * len(durations)
    return [Sample(name=name, start=100.0 + i, ms=float(d), ok=o and not c, censored=c,
                   error=None if o and not c else "no answer: ConnectError: [Errno 111] Connection refused")
            for i, (d, o, c) in enumerate(zip(durations, ok, censored))]


def _exact_ranks(n, p, confidence=0.95):
    """The definition, by exact binomial sums: l the largest rank with P(B <= l-1) <= a, u the smallest
    with P(B >= u) <= a (0 and n + 1 when none)."""
    a = (1 - confidence) / 2
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    low = max((k for k in range(1, n + 1) if sum(pmf[:k]) <= a), default=0)
    high = min((k for k in range(1, n + 1) if sum(pmf[k:]) <= a), default=n + 1)
    return low, high


@pytest.mark.parametrize("p", [0.5, 0.9, 0.95, 0.99])
def test_rank_bounds_follow_the_binomial_definition(p):
    for n in (*range(1, 80), 100, 150, 200):
        assert rank_bounds(n, p) == _exact_ranks(n, p), (n, p)
    ns = np.array([20, 72, 100])
    low, high = rank_bounds(ns, p)  # vectorised the same
    assert [(int(a), int(b)) for a, b in zip(low, high)] == [_exact_ranks(int(n), p) for n in ns]


def test_the_p95_upper_end_needs_72_samples():
    assert rank_bounds(71, 0.95)[1] == 72  # n + 1: unbounded
    assert rank_bounds(72, 0.95) == (64, 72)  # the largest of 72 bounds it
    assert rank_bounds(100, 0.95) == (90, 100)
    assert rank_bounds(1, 0.5) == (0, 2)  # one sample bounds nothing


@pytest.mark.parametrize("n, p", [(30, 50), (100, 95), (250, 95), (400, 99)])
def test_complete_samples_match_scipy_quantile_test(n, p):
    rng = np.random.default_rng(n)
    values = list(rng.lognormal(7, 0.5, n))
    iv = percentile_interval(values, p)
    ci = quantile_test(np.array(values), q=0, p=p / 100).confidence_interval(0.95)
    assert (iv.low, iv.high) == (ci.low, ci.high)
    assert iv.value == percentile(values, p)


@pytest.mark.parametrize("n, p", [(100, 95), (30, 50)])
def test_coverage_is_at_least_95_percent_with_and_without_censoring(n, p):
    rng = np.random.default_rng(7)
    true_q = float(np.exp(7 + 0.5 * {95: 1.6448536, 50: 0.0}[p]))  # lognormal(7, 0.5)
    cap = float(np.exp(7 + 0.5 * 1.2))  # ~ the 88th percentile: values above it are cut off there
    covered = covered_censored = 0
    trials = 1000
    for _ in range(trials):
        values = rng.lognormal(7, 0.5, n)
        iv = percentile_interval(list(values), p)
        covered += (iv.low or 0) <= true_q <= (math.inf if iv.high is None else iv.high)
        known, cut = [v for v in values if v <= cap], [cap] * int((values > cap).sum())
        ivc = percentile_interval(known, p, censored=cut)
        covered_censored += (ivc.low or 0) <= true_q <= (math.inf if ivc.high is None else ivc.high)
    assert covered / trials >= 0.94  # nominal >= 95 %; 1000 trials leave ~0.7 % of noise
    assert covered_censored / trials >= 0.94


def test_censored_and_unknown_samples_widen_the_interval():
    known = [100.0 + i for i in range(95)]
    full = percentile_interval(known + [5000.0] * 5, 95)
    assert (full.high, full.low, full.ranks) == (5000.0, 189.0, (90, 100))  # 90th and 100th smallest
    cut = percentile_interval(known, 95, censored=[300.0] * 5)  # five still running at 300 ms
    assert cut.high is None and cut.low == full.low and cut.censored == 5
    never = percentile_interval(known, 95, unknown=5)  # five never ran: 0 .. unbounded
    assert never.high is None and never.low <= full.low and never.unknown == 5
    assert percentile_interval([], 95).value is None


def test_decide_by_the_whole_interval():
    below, above = parse_threshold("p95<3000ms"), parse_threshold("tps_p50>2")
    assert decide(below, 1000, 2900) is Status.PASS
    assert decide(below, 3000, 4000) is Status.FAIL  # the lower end at the target: not under it
    assert decide(below, 2000, None) is Status.INDETERMINATE  # unbounded above
    assert decide(above, 2.5, 9) is Status.PASS
    assert decide(above, 0.5, 2) is Status.FAIL
    assert decide(above, None, 3) is Status.INDETERMINATE


def test_a_small_run_is_indeterminate_and_says_how_many_would_decide_it():
    th = parse_threshold("p95<70s")
    judged = evaluate(Evidence(samples([17_000 + i for i in range(20)]), planned=20), th)
    assert judged.status is Status.INDETERMINATE and judged.interval[1] is None
    assert judged.to_decide == 72 and "no upper bound below 72 samples" in judged.note
    at_target = [900.0] * 95 + [1100.0] * 5  # the p95 sits exactly at 1000 ms: no count decides it
    assert requests_to_decide(at_target, parse_threshold("p95<1000ms").passes, 95, True, 101) is None
    slow = [80_000.0] * 30  # every sample above: a fail is decided as soon as the lower end is bounded
    assert requests_to_decide(slow, th.passes, 95, True, 31) == 31
    assert evaluate(Evidence(samples([80_000] * 30), planned=30), th).status is Status.FAIL


def test_a_figure_shown_beside_the_gates_gets_its_interval_and_no_verdict():
    from harness.load.thresholds import parse_metric

    streamed = [Sample("s", 1.0 + i, 400.0, True, ttft_ms=50.0 + i) for i in range(30)]
    shown = evaluate(Evidence(streamed, planned=30), parse_metric("ttft_p50"))
    assert shown.status is Status.INFO and shown.value == 64.0 and shown.interval == (59.0, 70.0)  # ranks 10 and 21 of 30
    assert evaluate(Evidence(streamed[:3], planned=10, missing_failed=False), parse_metric("itl_p95")).status \
        is Status.INFO  # no ITL in these samples, and still no verdict


def test_zero_successes_fail_with_the_dominant_error():
    refused = samples([0.5] * 20, ok=[False] * 20)
    for text in ("p95<3000ms", "rps>1", "avg<1s", "ttft_p95<1s"):
        judged = evaluate(Evidence(refused, planned=20), parse_threshold(text))
        assert judged.status is Status.FAIL, text
        assert "no successful request: 20 of 20 failed" in judged.note and "Connection refused" in judged.note
    assert "(20×)" in dominant_error(refused)
    assert evaluate(Evidence([], planned=20), parse_threshold("p95<1s")).status is Status.FAIL


def test_a_capped_run_counts_what_never_ran_as_failed():
    fourteen = samples([40_000 + 100 * i for i in range(14)])
    capped = Evidence(fourteen, planned=20, missing_failed=True)
    fr = evaluate(capped, parse_threshold("fail_ratio<0.07"))
    assert fr.status is Status.FAIL and fr.value == pytest.approx(6 / 20) and "6 never run" in fr.note
    p95 = evaluate(capped, parse_threshold("p95<70s"))
    assert p95.status is not Status.PASS and p95.interval[1] is None
    # stopped early on purpose: what never ran is unknown either way, not a failure
    stopped = evaluate(Evidence(fourteen, planned=20, missing_failed=False), parse_threshold("fail_ratio<0.07"))
    assert stopped.status is Status.INDETERMINATE and stopped.interval == (0.0, 6 / 20)


def test_cut_off_requests_fail_and_count_from_below():
    ss = samples([100.0] * 18 + [61_000.0, 62_000.0], censored=[False] * 18 + [True, True])
    judged = evaluate(Evidence(ss, planned=20), parse_threshold("max<60s"))
    assert judged.status is Status.FAIL and judged.at_least  # at least 62 s: over 60 s whatever the rest
    assert evaluate(Evidence(ss, planned=20), parse_threshold("fail_ratio<0.2")).value == pytest.approx(0.1)
    streamed = [Sample("s", 1.0, 500.0, False, censored=True)] + [Sample("s", 1.0, 400.0, True, ttft_ms=50.0)] * 9
    ttft = evaluate(Evidence(streamed), parse_threshold("ttft_p50<1s"))
    assert ttft.status is Status.PASS  # the cut-off stream's TTFT is unknown: 9 known of 10 still decide a p50


def test_the_early_loss_is_a_gate_decided_against():
    fail = parse_threshold("fail_ratio<0.1")  # 20 planned: at most 1 failure passes (2/20 = 0.1 fails)
    assert not _lost(samples([1], ok=[False]), [fail], 20)
    assert _lost(samples([1, 1], ok=[False, False]), [fail], 20).startswith("fail_ratio<0.1 decided against")
    p95 = parse_threshold("p95<100ms")  # 20 planned: the lower end is the 17th smallest; 4 slow decide it
    assert not _lost(samples([150, 150, 150, 10]), [p95], 20)
    assert _lost(samples([150, 150, 150, 150, 10]), [p95], 20)
    assert not _lost(samples([1] * 5), [parse_threshold("rps>100")], 20)  # a rate is judged at the end


def test_the_budget_extends_only_for_an_undecided_percentile(tmp_path):
    import json
    from dataclasses import replace

    from harness.load.runner import Budget
    from harness.load.scenarios import SCENARIOS

    sc = replace(SCENARIOS["code"], users=2, requests=20, budget=100)
    fast = samples([100.0] * 19)
    budget = Budget(sc, tmp_path / "budget", 300, extend=True)
    assert json.loads(budget.path.read_text()) == {"allowed": 20, "final": False}
    budget.steer(fast[:5], [parse_threshold("p95<3s")])  # tickets still going out: nothing yet
    assert (budget.allowed, budget.final) == (20, False)
    budget.steer(fast, [parse_threshold("p95<3s")])  # 19 of 20 in: no count under 72 bounds a p95
    assert (budget.allowed, budget.final) == (72, False) and budget.extensions[0].startswith("20 -> 72: p95<3s")
    assert json.loads(budget.path.read_text()) == {"allowed": 72, "final": False}
    budget.steer(samples([100.0] * 72), [parse_threshold("p95<3s")])
    assert (budget.allowed, budget.final) == (72, True)  # decided: the run ends at 72
    # a maximum is decided by the requests allowed, never by more
    only_max = Budget(sc, tmp_path / "b2", 300, extend=True)
    only_max.steer(fast, [parse_threshold("max<3s")])
    assert (only_max.allowed, only_max.final) == (20, True)
    # on a contended box it does not extend: the gate cannot pass there
    busy = Budget(sc, tmp_path / "b3", 300, extend=True, contended=lambda: "outside 60 %")
    busy.steer(fast, [parse_threshold("p95<3s")])
    assert (busy.allowed, busy.final) == (20, True) and "the box is contended (outside 60 %)" in busy.extensions[0]
    # the time cap grows with the count allowed
    assert budget.cap_s(72) == pytest.approx(300 * 72 / 20) and budget.cap_s(20) == 300
