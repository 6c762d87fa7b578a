"""Flow `register-best`: register the best evaluated run of a scale; move `champion` only if
it beats the current champion. With no training runs at all, seed the shipped weights."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger

from srcnn.evaluation.ranking import RankBy
from tasks.registry import best_run, register_run, seed


@flow(name="register-best", log_prints=True)
def register_best(scale: int = 3, run_id: str | None = None,
                  max_macs: int | None = None, rank_by: RankBy = "worst") -> dict:
    """Register `run_id` (default: the best finished run of `scale` by `rank_by`, within the
    budget of `max_macs` multiply-adds per output pixel when given); `champion` moves to it
    only if it ranks above the current champion on the same suite rows.

    `rank_by` (`srcnn.evaluation.ranking`): `worst`, the lowest gain over bicubic across the
    evaluation suite (the default: a champion runs over buckets of every kind of image, so
    how much it can hurt comes first); `mean`, the mean PSNR on clean bicubic input; or a
    degradation's name, for a bucket known to hold that kind of image."""
    logger = get_run_logger()
    run_id = run_id or best_run(scale, max_macs, rank_by)
    if run_id is None:
        logger.warning("no evaluated training runs for x%d%s: seeding the shipped weights",
                       scale, f" within {max_macs} multiply-adds per pixel" if max_macs else "")
        reg = seed(scale)
        return asdict(reg) if reg else {}
    return asdict(register_run(run_id, scale, max_macs, rank_by))


if __name__ == "__main__":
    import sys

    print(register_best(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
