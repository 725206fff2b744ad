"""Anomaly scores on real servers' metrics: `sentinel anomaly evaluate` on the shared real
datasets (../shared/datasets: asd, 12 application servers x 19 metrics; nab-aws, 17 AWS
CloudWatch series), sentinel's estimator and every baseline, so the figures docs/anomaly.md
quotes are one command away.

Prints each run's last line (the means over entities), then per dataset the worst entity's
alarm rate at the label-free threshold; the issue's targets are AUPRC at least the best
baseline's, alarm rate <= 5 % on average and <= 20 % on the worst entity.
"""

from __future__ import annotations

import sys
import time

from sentinel.anomaly.dataset import read_dataset, shared_datasets
from sentinel.anomaly.evaluation import evaluate_entity, summarize

ESTIMATORS = ("combined", "zscore", "pca", "knn")


def main() -> int:
    root = shared_datasets()
    if root is None:
        print("skipped: no shared datasets on this machine (set $SENTINEL_DATASETS, or put "
              "them in shared/datasets above the project)")
        return 0
    for name in ("asd", "nab-aws"):
        ents = list(read_dataset(root / name))
        for est in ESTIMATORS:
            if est == "pca" and ents[0].train.shape[1] < 2:
                print(f"{name:<8} {est:<9} (one feature: nothing to reconstruct)")
                continue
            t0 = time.perf_counter()
            # Both datasets are sampled every 5 minutes (their READMEs): the replay counts the
            # drift's times in seconds.
            res = [evaluate_entity(e.name, e.train, e.test, e.labels, est, step=300.0)[0]
                   for e in ents]
            m = summarize(res)
            worst = max(res, key=lambda r: r.alarm_rate_own)
            print(f"{name:<8} {est:<9} auprc={m['auprc']:.3f} fc1_best={m['fc1_best']:.3f} "
                  f"fc1_own={m['fc1_own']:.3f} alarm_rate_own={m['alarm_rate_own']:.3f} "
                  f"worst_alarm_rate={worst.alarm_rate_own:.3f} ({worst.entity}) "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
