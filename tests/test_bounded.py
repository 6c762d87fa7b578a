"""srcnn.concurrency.run_bounded on a real Dask cluster and on Dask's local scheduler: every job
once, at most `window` in flight, a slow task holding up only itself, errors re-raised."""

from __future__ import annotations

import sys

import cloudpickle
import gates
import pytest
from gates import gated

from srcnn.concurrency import current_client, run_bounded

# workers need not import tests/
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(gates)


def counted(jobs, pulled: list[int]):
    for job in jobs:
        pulled[0] += 1
        yield job


def square_or_fail(i: int) -> int:
    if i == 3:
        raise ValueError(f"bad input {i}")
    return i * i


# The local-scheduler tests come first: the module's cluster, once started, is the default
# Client until the module ends.
def test_local_scheduler_runs_a_window_at_a_time():
    assert current_client() is None
    pulled, seen = [0], []
    jobs = counted(((i, (i,)) for i in range(10) if i != 3), pulled)
    for tag, result in run_bounded(square_or_fail, jobs, 4):
        assert pulled[0] - len(seen) - 1 <= 4  # the others in flight
        assert result == tag * tag
        seen.append(tag)
    assert sorted(seen) == [i for i in range(10) if i != 3]


@pytest.mark.parametrize("on_cluster", [False, True])
def test_a_failing_task_raises_its_error(on_cluster, request):
    if on_cluster:
        request.getfixturevalue("dask_cluster")
    assert (current_client() is not None) == on_cluster
    with pytest.raises(ValueError, match="bad input 3"):
        list(run_bounded(square_or_fail, ((i, (i,)) for i in range(8)), 2))


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window 0"):
        list(run_bounded(square_or_fail, [(1, (1,))], 0))


def test_a_slow_task_holds_up_only_itself(dask_cluster, tmp_path):
    # Two workers, four in flight: while task 0 waits, the other worker works through tasks 1
    # to 10, each submitted as one ends; the tenth opens the gate. With a batch of four per
    # dask.compute, task 10 would wait for task 0's batch to end, and task 0 for task 10.
    window, n, opener = 4, 16, 10
    pulled, order = [0], []
    jobs = counted(((i, (i, str(tmp_path), opener)) for i in range(n)), pulled)
    results = {}
    for tag, result in run_bounded(gated, jobs, window):
        assert pulled[0] - len(order) - 1 <= window  # submitted, not yet returned
        order.append(tag)
        results[tag] = result
    assert sorted(order) == list(range(n))  # every job once
    assert results[0] == "passed the gate"  # task 10 ran while task 0 was in flight
    assert results[5] == "task 5"
