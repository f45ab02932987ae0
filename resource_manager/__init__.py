"""The Resource Manager: session lifecycle, cloud drivers, the VM pool and its loops."""
