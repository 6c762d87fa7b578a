"""Ranking models on the evaluation suite: like for like, by the worst row, the mean or a row."""

import pytest

from srcnn.evaluation.ranking import RANKINGS, compare, rank_metric, suite_rows
from srcnn.registry.champion import comparable_scores


def tags(**rows: tuple[float, float]) -> dict[str, str]:
    """Registry-style tags for rows given as set__degradation=(psnr, bicubic psnr)."""
    out = {}
    for row, (psnr, bicubic) in rows.items():
        dataset, _, degradation = row.partition("__")
        middle = f"{degradation}_" if degradation else ""
        out[f"{dataset}_x3_{middle}psnr"] = f"{psnr}"
        out[f"{dataset}_x3_{middle}bicubic_psnr"] = f"{bicubic}"
    return out


# A net trained on clean input: +2.9 dB there, -2.6 dB on a non-antialiased thumbnail.
CLEAN_NET = tags(set5=(33.3, 30.4), set14=(29.6, 27.6), set5__cubic=(27.2, 29.8),
                 set14__cubic=(24.1, 26.7), set5__cubic_jpeg60=(26.3, 28.3))
# A robust net: less on clean input, a gain on every row.
ROBUST_NET = tags(set5=(32.9, 30.4), set14=(29.3, 27.6), set5__cubic=(30.6, 29.8),
                  set14__cubic=(27.3, 26.7), set5__cubic_jpeg60=(29.0, 28.3))


def test_rows_are_read_back_from_metric_names():
    rows = suite_rows(CLEAN_NET | {"val_psnr": "25.0", "set5_x2_psnr": "36.0",
                                   "best_held_out_psnr": "30.1"}, 3)
    assert set(rows) == {("set5", "bicubic"), ("set14", "bicubic"), ("set5", "cubic"),
                         ("set14", "cubic"), ("set5", "cubic+jpeg60")}
    assert rows[("set5", "cubic+jpeg60")].psnr == 26.3
    assert rows[("set5", "cubic+jpeg60")].bicubic_psnr == 28.3
    assert rows[("set14", "bicubic")].gain == pytest.approx(2.0)


def test_worst_case_prefers_the_net_that_never_hurts():
    assert compare(ROBUST_NET, CLEAN_NET, 3, "worst") == pytest.approx((0.6, -2.6))
    assert compare(ROBUST_NET, CLEAN_NET, 3, "mean") == pytest.approx((31.1, 31.45))
    assert compare(ROBUST_NET, CLEAN_NET, 3, "cubic+jpeg60") == pytest.approx((29.0, 26.3))


def test_comparison_is_like_for_like():
    # The champion was scored on Set5 only: Set14's rows of the challenger do not count, or a
    # bad Set14 row would decide against a champion that was never scored there.
    champion = tags(set5=(33.0, 30.4), set5__cubic=(30.0, 29.8))
    challenger = tags(set5=(33.1, 30.4), set5__cubic=(30.3, 29.8), set14__cubic=(20.0, 26.7))
    assert compare(challenger, champion, 3, "worst") == pytest.approx((0.5, 0.2))
    # Rows one side lacks a baseline for are left out of the worst case.
    no_baseline = {k: v for k, v in champion.items() if k != "set5_x3_cubic_bicubic_psnr"}
    assert compare(challenger, no_baseline, 3, "worst") == pytest.approx((2.7, 2.6))
    assert compare(challenger, {}, 3, "worst") is None
    assert comparable_scores(challenger, {"selection_psnr": "31.0"}, 3, 31.5) == (31.5, 31.0)


def test_every_ranking_names_a_run_metric_and_others_are_refused():
    metrics = {rank_metric(name) for name in RANKINGS}
    assert len(metrics) == len(RANKINGS)
    assert rank_metric("worst") == "worst_gain"
    assert rank_metric("bicubic+jpeg75") == "bicubic_jpeg75_mean_psnr"
    with pytest.raises(ValueError, match="rank by 'best'"):
        rank_metric("best")
