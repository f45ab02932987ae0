"""Which provider mounts each release of a session on this VM: S3 (`dir` archives, `loop`
images) anywhere, and on an EC2 VM an EBS snapshot (`ebs`), which wins where a release has both."""

from __future__ import annotations

from pathlib import Path

from job_agent.volumes import VolumeProvider
from job_agent.volumes.attachments import EbsAttacher
from job_agent.volumes.ebs import EbsVolumes
from job_agent.volumes.s3 import S3Volumes
from shared.aws import Aws
from shared.errors import ReleaseError
from shared.models import Bootstrap, Ec2Cloud


class ReleaseVolumes(VolumeProvider):
    """One VolumeProvider for the agent that hands each release to the provider of its kind."""

    def __init__(self, routes: dict[str, VolumeProvider], elsewhere: dict[str, str]) -> None:
        self._routes = routes
        self._elsewhere = elsewhere  # release -> why this VM cannot mount it
        self._providers = list({id(p): p for p in routes.values()}.values())

    def mount(self, release: str) -> Path:
        """See VolumeProvider; blocks, is idempotent and raises as the provider does."""
        provider = self._routes.get(release)
        if provider is not None:
            return provider.mount(release)
        if release in self._elsewhere:
            raise ReleaseError(f"release {release!r} {self._elsewhere[release]}")
        raise ReleaseError(f"release {release!r} is not known to the session")

    def unmount_all(self) -> None:
        """See VolumeProvider: every provider's volumes. Idempotent; never raises."""
        for provider in self._providers:
            provider.unmount_all()


def release_volumes(bootstrap: Bootstrap, aws: Aws, root: Path) -> ReleaseVolumes:
    """The releases of the bootstrap's session, as this VM mounts them, under `root`.
    Makes no AWS call: an EBS volume is only looked at when a job needs its release."""
    info = bootstrap.session
    s3 = S3Volumes(aws, info.bucket, info.releases, root / "releases", info.release_digests)
    routes: dict[str, VolumeProvider] = dict.fromkeys(info.releases, s3)
    cloud = next((c for c in info.config.clouds if c.name == bootstrap.cloud), None)
    if not isinstance(cloud, Ec2Cloud):
        elsewhere = {
            name: f"is an EBS snapshot ({snapshot}): it mounts on EC2 VMs only"
            for name, snapshot in info.snapshots.items()
            if name not in routes
        }
        return ReleaseVolumes(routes, elsewhere)
    if info.snapshots:
        ec2 = Aws(cloud.region or info.region, cloud.endpoint_url or info.endpoint_url)
        attacher = EbsAttacher(ec2.client("ec2"), info.id, bootstrap.vm_id)
        ebs = EbsVolumes(attacher, info.snapshots, root / "ebs")
        routes.update(dict.fromkeys(info.snapshots, ebs))
    return ReleaseVolumes(routes, {})
