"""The benchmark's interleaving: every candidate in every round, rotating start, paired ratios per round."""
import pytest

from deploy.bench.timing import measure_interleaved, paired_ratio


def test_rounds_interleave_candidates_with_a_rotating_start():
    calls = []
    candidates = {label: (lambda label=label: calls.append(label)) for label in "abc"}
    result = measure_interleaved(candidates, rounds=3, runs_per_round=2, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    for t in result.values():
        assert t["runs"] == 6 and len(t["round_medians_ms"]) == 3
        assert t["spread_ms"] == [min(t["round_medians_ms"]), max(t["round_medians_ms"])]


def test_paired_ratio_uses_the_same_rounds():
    ratio = paired_ratio({"round_medians_ms": [2.0, 4.0, 9.0]}, {"round_medians_ms": [4.0, 4.0, 3.0]})
    assert ratio == {"median": 1.0, "spread": [0.5, 3.0]}


@pytest.mark.parametrize("rounds, runs", [(0, 3), (5, 0)])
def test_nonsense_round_counts_are_refused(rounds, runs):
    with pytest.raises(ValueError, match=f"rounds={rounds}"):
        measure_interleaved({"a": lambda: None}, rounds=rounds, runs_per_round=runs)
