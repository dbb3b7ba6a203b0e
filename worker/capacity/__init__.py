"""Upstream capacity: channels (credentials) and their health, fleet-wide limits, and one object over them.

The pipeline only talks to ``Capacity`` and the values it returns.
"""

from worker.capacity.after_failure import Fail, RetryElsewhere, RetryHere, SubmitPlan, retry_delay
from worker.capacity.capacity import Capacity
from worker.capacity.channels import Admitted, Refusing, Waiting

__all__ = [
    "Admitted",
    "Capacity",
    "Fail",
    "Refusing",
    "RetryElsewhere",
    "RetryHere",
    "SubmitPlan",
    "Waiting",
    "retry_delay",
]
