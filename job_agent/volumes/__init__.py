"""Release volumes: a release behind one small interface, like the cloud drivers.

- `s3.py`: releases stored in the session's S3 prefix, `dir` archives (extracted, bound
  read-only) and `loop` images (ext4 or squashfs through a loop device);
- `ebs.py`: EBS snapshots on EC2 VMs, a volume each (`attachments.py`, the EC2 half);
- `mounts.py`: the kernel mounts both make, as root or with CAP_SYS_ADMIN only.
`job_agent/releases.py` picks a provider per release.
"""

from __future__ import annotations

from job_agent.volumes.base import VolumeProvider

__all__ = ["VolumeProvider"]
