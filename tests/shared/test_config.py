from pathlib import Path

import pytest

from shared.config import load_job_file, load_session_config
from shared.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "session.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_gets_sane_defaults(tmp_path: Path) -> None:
    config = load_session_config(write(tmp_path, 'name = "ok"\n'))
    assert config.priorities == 3
    assert config.region == "us-east-1"
    assert config.clouds == ()


def test_unknown_key_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_session_config(write(tmp_path, 'name = "ok"\npriorites = 3\n'))
    message = str(err.value)
    assert "priorites" in message and "unknown key" in message
    assert "\n" not in message


def test_unknown_key_inside_a_cloud_is_named_with_its_path(tmp_path: Path) -> None:
    text = 'name = "ok"\n[[clouds]]\nname = "l"\ndriver = "local"\ncores = 2\n'
    with pytest.raises(ConfigError, match=r"clouds\.0\.cores: unknown key"):
        load_session_config(write(tmp_path, text))


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"priorities: .*'many'"):
        load_session_config(write(tmp_path, 'name = "ok"\npriorities = "many"\n'))


def test_unknown_driver_is_rejected(tmp_path: Path) -> None:
    text = 'name = "ok"\n[[clouds]]\nname = "x"\ndriver = "gcp"\n'
    with pytest.raises(ConfigError, match=r"clouds\.0"):
        load_session_config(write(tmp_path, text))


def test_heartbeat_must_fit_in_the_lease(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heartbeat_s"):
        load_session_config(write(tmp_path, 'name = "ok"\nlease_s = 10\nheartbeat_s = 5\n'))


def test_broken_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_session_config(write(tmp_path, 'name = "ok\n'))


def test_release_archive_is_relative_to_the_config(tmp_path: Path) -> None:
    text = 'name = "ok"\n[releases."1.0"]\narchive = "rel.tar.gz"\n'
    (tmp_path / "rel.tar.gz").write_bytes(b"")
    config = load_session_config(write(tmp_path, text))
    assert config.releases["1.0"].archive == str(tmp_path / "rel.tar.gz")


def test_job_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    text = '[[job]]\nscript = "a.sh"\ncount = 3\ninputs = ["in.txt"]\n[[job]]\nscript = "b.sh"\n'
    specs = load_job_file(write(tmp_path, text, "jobs.toml"))
    assert [s.count for s in specs] == [3, 1]
    assert specs[0].script == str(tmp_path / "a.sh")
    assert specs[0].inputs == (str(tmp_path / "in.txt"),)


def test_job_file_unknown_key_names_job_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"job\.1: .*walltme: unknown key"):
        load_job_file(
            write(
                tmp_path, '[[job]]\nscript = "a"\n[[job]]\nscript = "b"\nwalltme = 3\n', "jobs.toml"
            )
        )


def test_job_file_without_jobs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \[\[job\]\]"):
        load_job_file(write(tmp_path, "", "jobs.toml"))
