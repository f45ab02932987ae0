import pytest

from shared import naming
from shared.message import JobMessage, decode, wake


def test_names_share_the_session_id_and_fit_aws_limits() -> None:
    sid = naming.new_session_id("a-very-long-name-20")
    assert naming.queue_name(sid, 3).endswith("-p3")
    assert len(naming.queue_name(sid, 10)) <= 80
    assert naming.table_name(sid, "jobs") == f"clobi-{sid}-jobs"


def test_a_token_gives_the_same_job_ids_and_no_token_new_ones() -> None:
    assert naming.batch_id("s", "run-7") == naming.batch_id("s", "run-7")
    assert naming.batch_id("s", "run-7") != naming.batch_id("t", "run-7")
    assert naming.batch_id("s", None) != naming.batch_id("s", None)
    assert naming.job_id("abc", 4) == "abc.4"


def test_attempt_outputs_have_their_own_prefix() -> None:
    assert naming.attempt_prefix("p/", "j.1", 1) != naming.attempt_prefix("p/", "j.1", 2)


def test_message_roundtrip_and_poison() -> None:
    message = JobMessage("s", "j.0", 2)
    assert decode(message.encode()) == message
    assert decode(wake("s")) is None
    for body in (
        "not json",
        "[]",
        '{"v": 1, "s": "s"}',
        '{"v": 1, "s": "s", "j": "x", "a": -1}',
        '{"v": 2, "s": "s", "j": "x", "a": 0}',
    ):
        with pytest.raises(ValueError):
            decode(body)
