"""The `clobi` command: assembles the commands of the Resource Manager, the Job Agent and the
Job Management Interface, and runs the demo."""
