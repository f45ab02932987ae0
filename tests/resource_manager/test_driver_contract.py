"""One contract for every CloudDriver, run against `local` (real agent processes) and `ec2`
(the embedded endpoint's EC2): idempotent launch, verified terminate, the session's VMs and
only those, the cloud as the truth, `sweep`, and DriverError as the only failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from resource_manager.drivers import CloudDriver, driver_for
from resource_manager.drivers.ec2 import Ec2Driver
from resource_manager.drivers.local import session_root
from shared import naming
from shared.aws import Aws
from shared.errors import DriverError
from shared.models import Bootstrap, Ec2Cloud, LocalCloud
from shared.session import Session

EC2 = Ec2Cloud(
    name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent", spot=True
)
LOCAL = LocalCloud(name="local", driver="local", cores_per_vm=1, max_vms=4)
CLOUDS = {"local": LOCAL, "ec2": EC2}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def new_session(make_session: Callable[..., Session]) -> Session:
    session = make_session(clouds=(LOCAL, EC2))
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    return session


@pytest.fixture(params=list(CLOUDS))
def cloud(
    request: pytest.FixtureRequest, make_session: Callable[..., Session]
) -> Iterator[tuple[Session, CloudDriver]]:
    session = new_session(make_session)
    yield session, driver_for(session.info, CLOUDS[request.param])


@pytest.fixture(params=list(CLOUDS))
def unreachable(
    request: pytest.FixtureRequest, make_session: Callable[..., Session]
) -> tuple[Session, CloudDriver]:
    """A driver whose cloud cannot be reached: for `ec2` an endpoint nobody answers at (asked
    once, not four times), for `local` a working area the machine cannot write to."""
    session = new_session(make_session)
    if request.param == "ec2":
        return session, Ec2Driver(session.info, EC2, Aws("us-east-1", UNREACHABLE, retries=1))
    root = session_root(session.id)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("not a folder\n")
    return session, driver_for(session.info, LOCAL)


def bootstrap(session: Session, cloud: str) -> Bootstrap:
    return Bootstrap(vm_id=naming.new_vm_id(cloud), cloud=cloud, cores=1, session=session.info)


def alive(driver: CloudDriver) -> set[str]:
    return {i.vm_id for i in driver.instances() if i.alive}


def test_launch_is_idempotent_per_vm_id(cloud: tuple[Session, CloudDriver]) -> None:
    session, driver = cloud
    boot = bootstrap(session, driver.name)
    first = driver.launch(boot)
    assert driver.launch(boot) == first
    live = [i for i in driver.instances() if i.alive]
    assert [(i.vm_id, i.instance_id) for i in live] == [(boot.vm_id, first)]


def test_terminate_is_verified_and_idempotent(cloud: tuple[Session, CloudDriver]) -> None:
    session, driver = cloud
    keep, kill = bootstrap(session, driver.name), bootstrap(session, driver.name)
    driver.launch(keep)
    driver.launch(kill)
    driver.terminate([kill.vm_id])  # returns once the cloud says it is gone
    assert alive(driver) == {keep.vm_id}
    driver.terminate([kill.vm_id, "vm-never-existed"])
    driver.terminate([keep.vm_id])
    assert alive(driver) == set()


def test_instances_are_only_the_sessions_own(
    cloud: tuple[Session, CloudDriver], make_session: Callable[..., Session]
) -> None:
    session, driver = cloud
    other = make_session(clouds=(LOCAL, EC2))  # the instance profile is the account's
    config = LOCAL if driver.name == "local" else EC2
    driver_for(other.info, config).launch(bootstrap(other, driver.name))
    mine = bootstrap(session, driver.name)
    driver.launch(mine)
    assert [i.vm_id for i in driver.instances() if i.alive] == [mine.vm_id]


def test_the_cloud_is_the_truth_a_new_driver_sees_and_ends_what_an_earlier_one_launched(
    cloud: tuple[Session, CloudDriver],
) -> None:
    """A restarted Resource Manager has a new driver and no memory: what it lists comes from
    the cloud, and with it the VMs the registry never heard of (the orphans it terminates)."""
    session, driver = cloud
    boot = bootstrap(session, driver.name)
    instance = driver.launch(boot)
    fresh = driver_for(session.info, LOCAL if driver.name == "local" else EC2)
    assert [(i.vm_id, i.instance_id, i.alive) for i in fresh.instances()] == [
        (boot.vm_id, instance, True)
    ]
    assert fresh.launch(boot) == instance  # idempotent across drivers too
    fresh.terminate([boot.vm_id])
    assert alive(driver) == set()


def test_sweep_after_terminate_counts_what_it_deleted_once(
    cloud: tuple[Session, CloudDriver],
) -> None:
    session, driver = cloud
    boot = bootstrap(session, driver.name)
    driver.launch(boot)
    driver.terminate([boot.vm_id])
    assert driver.sweep() >= 0
    assert driver.sweep() == 0, "a second sweep finds nothing left"
    assert alive(driver) == set()


def test_a_cloud_that_cannot_be_reached_fails_with_driver_error_only(
    unreachable: tuple[Session, CloudDriver],
) -> None:
    """Callers (the pool, the monitor) catch DriverError: no AwsError or OSError gets out.
    Terminating or sweeping what cannot be found may also succeed (nothing to do)."""
    session, driver = unreachable
    with pytest.raises(DriverError, match=driver.name):
        driver.instances()
    with pytest.raises(DriverError):
        driver.launch(bootstrap(session, driver.name))
    for call in (lambda: driver.terminate([naming.new_vm_id(driver.name)]), driver.sweep):
        try:
            call()
        except DriverError:
            pass
