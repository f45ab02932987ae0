"""The Job Agent: runs on every VM, claims jobs from the session's queues and runs them."""
