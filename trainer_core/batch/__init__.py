"""`trainer batch`: every pair of a manifest as a Ray task, resumable, with batch reporters.

`planning.py` decides what to train and checks what needs no Ray, `cluster.py` whether the pairs'
resources fit the nodes, `driver.py` (`BatchRun`) runs the lifecycle in the driver process, and
`worker.py` is the code that runs inside each Ray task.
"""

from .driver import BatchReport, BatchRun, check_reachable
from .planning import Plan, absolute_paths, plan_pair, select_pairs

__all__ = [
    "BatchReport",
    "BatchRun",
    "Plan",
    "absolute_paths",
    "check_reachable",
    "plan_pair",
    "select_pairs",
]
