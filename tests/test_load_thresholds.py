"""Threshold grammar: k6-style targets parse into typed values; bad syntax says what is expected."""

import pytest

from harness.load.thresholds import ThresholdError, parse_threshold, parse_thresholds


@pytest.mark.parametrize("text, metric, op, value, row", [
    ("p95<3000ms", "p95", "<", 3000.0, None),
    ("p95 < 3s", "p95", "<", 3000.0, None),
    ("p99.9<=250", "p99.9", "<=", 250.0, None),
    ("fail_ratio<0.03", "fail_ratio", "<", 0.03, None),
    ("fail_ratio<3%", "fail_ratio", "<", 0.03, None),
    ("rps>1", "rps", ">", 1.0, None),
    ("ttft_p95<500ms", "ttft_p95", "<", 500.0, None),
    ("tps_p50>=5", "tps_p50", ">=", 5.0, None),
    ("avg{code completion}<2s", "avg", "<", 2000.0, "code completion"),
    ("count>=20", "count", ">=", 20.0, None),
])
def test_parses(text, metric, op, value, row):
    th = parse_threshold(text)
    assert (th.metric, th.op, th.row) == (metric, op, row)
    assert th.value == pytest.approx(value)
    assert str(th) == text.strip()


def test_units_and_kinds():
    assert parse_threshold("p95<3000ms").is_time
    assert parse_threshold("ttft_max<1s").is_time
    assert not parse_threshold("tps_p50>5").is_time
    assert parse_threshold("tps_p50>5").stat == "p50"
    assert parse_threshold("p90<1").passes(0.5) and not parse_threshold("p90<1").passes(1)
    assert parse_threshold("rps>=1").passes(1.0)


def test_list_split_keeps_row_commas():
    ths = parse_thresholds("p95<3000ms, fail_ratio<0.03,p50{a, b}<1s")
    assert [t.metric for t in ths] == ["p95", "fail_ratio", "p50"]
    assert ths[2].row == "a, b"
    assert parse_thresholds("") == [] and parse_thresholds(None) == []


@pytest.mark.parametrize("bad", [
    "p95", "p95<", "p95<<3", "latency<3s", "p95>fast", "p0<3ms", "p101<3ms", "fail_ratio<3ms",
    "rps>1s", "p95<3%", "tps_p50>5ms", "p95{}<3s", "count>1%",
])
def test_bad_syntax_is_a_clear_error(bad):
    with pytest.raises(ThresholdError) as info:
        parse_threshold(bad)
    assert repr(bad) in str(info.value) or bad in str(info.value)


def test_error_names_the_grammar():
    with pytest.raises(ThresholdError, match=r"expected METRIC\[\{ROW\}\] OP VALUE\[UNIT\]"):
        parse_threshold("p95 below 3s")
