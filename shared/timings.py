"""The protocol's fixed timings: how the parts pace one another, in one place.

What a user may need to change per session is a setting (docs/configuration in the README):
`lease_s`, `heartbeat_s`, `resend_s`, `register_timeout_s`, `vm_timeout_s`, `starvation_s`,
`dispatch_window`. What is here is fixed because correctness or cost depends on how these relate
to each other and to those settings; docs/design.md says why each is what it is.
"""

from __future__ import annotations

# --- SQS --------------------------------------------------------------------------------------
# Short: a message received by an agent that then died (or froze in a long poll) comes back
# soon. A slow claim that sees its message again loses nothing: the second claim fails.
VISIBILITY_TIMEOUT_S = 10
MAX_RECEIVES_BEFORE_DLQ = 10  # a message received this often without being claimed is poison
ACK_AFTER_S = 0.5  # handled messages are deleted in batches, at most about this much later

# --- dispatch ---------------------------------------------------------------------------------
EMPTY_SKIP_S = 2.0  # a priority found with nothing pending is not asked again for this long

# --- the agent's polling ----------------------------------------------------------------------
IDLE_WAIT_S = 20  # an idle agent's long poll of the lowest queue (SQS's longest)
IDLE_ROUND_S = 60  # an idle agent still receives from every queue this often
QUEUE_SKIP_S = 1.0  # an empty queue is not received from again this soon (bounds priority delay)
# Before going idle an agent receives from every queue once more with this wait: a receive
# without one asks only some of SQS's servers and may miss a message that is there.
LAST_LOOK_WAIT_S = 1
FILL_EVERY_S = 0.5  # how often a busy agent may top up the dispatch window
NO_FIT_DELAY_S = 2  # a job too big for an agent's free slots comes back this much later

# --- leases and killing -----------------------------------------------------------------------
# Of the lease period without a renewal: the attempt gives up its job, well before the
# Resource Manager, which waits a whole lease, reaps it (docs/design.md, fencing).
FENCE_AFTER = 0.75
KILL_GRACE_S = 3.0  # from SIGTERM to SIGKILL for a job's processes
TERMINATE_WAIT_S = 120.0  # how long an EC2 terminate is verified before it counts as failed
KILL_WAIT_S = 10.0  # how long a local VM's kill is verified
# A VM its cloud does not list this long after its launch is gone (EC2 lists new instances
# after a few seconds, now and then longer); one that registered was listed already.
LISTED_WITHIN_S = 60.0
LEFTOVERS_EVERY_S = 60.0  # how often the monitor has clouds delete what dead VMs left behind
