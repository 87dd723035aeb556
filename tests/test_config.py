from __future__ import annotations

from pathlib import Path

import pytest

from foundation_support import write_project
from sinagot.config import DaskSettings, load_settings, load_store_settings
from sinagot.demo import DEMO_CONFIG
from sinagot.engine.internals import local_cluster_options
from sinagot.errors import ConfigError


def _error(tmp_path: Path, config: str) -> str:
    path = write_project(tmp_path, config=config)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_demo_config_loads_with_paths_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_project(tmp_path)
    monkeypatch.chdir("/")
    settings = load_settings(path)
    assert settings.config_path == path.resolve()
    assert settings.dataset_dir == (tmp_path / "data").resolve()
    assert settings.scripts_dir == (tmp_path / "scripts").resolve()
    assert settings.id_pattern.fullmatch("REC-200331-A")
    assert list(settings.tasks) == ["RS", "MMN", "HDC"]
    assert settings.tasks["HDC"].modalities == ("EEG", "clinical", "behavior")
    assert settings.modalities["EEG"].scripts == ("preprocess", "spectrum")
    assert settings.run_mode == "main_process"
    assert settings.dask.n_workers == 2 and settings.dask.processes is False
    assert settings.store.type == "local" and settings.store.pipeline == "sinagot"
    assert settings.daemon.max_attempts == 3 and settings.daemon.socket is None
    with pytest.raises(AttributeError):
        settings.run_mode = "dask"  # type: ignore[misc]


def test_per_task_script_override(tmp_path: Path) -> None:
    config = DEMO_CONFIG + '\n[modalities.EEG.tasks.RS]\nscripts = ["preprocess"]\n'
    settings = load_settings(write_project(tmp_path, config=config))
    eeg = settings.modalities["EEG"]
    assert eeg.scripts_for("RS") == ("preprocess",)
    assert eeg.scripts_for("MMN") == ("preprocess", "spectrum")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[records]", "[record]", "did you mean 'records'?"),
        ('level = "INFO"', 'levle = "INFO"', "log.levle: unknown key; did you mean 'level'?"),
        ('scripts = ["score"]', 'scritps = ["score"]', "modalities.clinical.scritps: unknown key"),
        ('dataset = "data"', 'dataset = "nowhere"', "path.dataset: folder"),
        ('scripts = "scripts"', 'scripts = "nope"', "path.scripts: folder"),
        (
            'id_pattern = "REC-',
            'id_pattern = "(REC-',
            "records.id_pattern: invalid regular expression",
        ),
        (
            'modalities = ["EEG", "clinical"]\n\n[tasks.MMN]',
            'modalities = ["EEG", "clinicl"]\n\n[tasks.MMN]',
            "unknown modality 'clinicl'; did you mean 'clinical'?",
        ),
        ('scripts = ["accuracy"]', 'scripts = ["accuracy", "speed"]', "script 'speed' has no file"),
        (
            'mode = "main_process"',
            'mode = "threads"',
            'run.mode: got \'threads\'; set it to "main_process" or "dask"',
        ),
        ("n_workers = 2", "n_workers = 0", "dask.n_workers: got 0; set it to an integer >= 1"),
        ("n_workers = 2", "n_workers = true", "dask.n_workers: got True"),
        ('level = "INFO"', 'level = "LOUD"', "log.level: got 'LOUD'"),
    ],
)
def test_each_mistake_is_one_clear_line(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in DEMO_CONFIG
    assert expected in _error(tmp_path, DEMO_CONFIG.replace(old, new, 1))


def test_scope_names_cannot_hide_the_api(tmp_path: Path) -> None:
    config = DEMO_CONFIG.replace("[tasks.MMN]", "[tasks.run]")
    assert "tasks.run: is not a valid task name" in _error(tmp_path, config)


LONG_NAME = "A" * 256


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("[tasks.MMN]", f"[tasks.{LONG_NAME}]", "tasks.AAAA"),
        ("[modalities.behavior]", f"[modalities.{LONG_NAME}]", "modalities.AAAA"),
        # A script becomes <name>.py: 253 characters make a 256-byte file name.
        ('scripts = ["accuracy"]', f'scripts = ["{"a" * 253}"]', "modalities.behavior.scripts"),
    ],
    ids=["task", "modality", "script"],
)
def test_names_too_long_for_a_file_name_are_one_clear_line(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    message = _error(tmp_path, DEMO_CONFIG.replace(old, new, 1))
    assert f"{key}" in message
    assert "255-byte limit" in message and "use a shorter name" in message
    assert "A" * 100 not in message and "a" * 100 not in message


_XNAT_STORE = '\n[store]\ntype = "xnat"\nserver = "http://127.0.0.1:1"\nproject = "P"\nuser = "u"\n'


# Found by tests/test_properties_config.py: each used to escape as an OSError, or as a
# ConfigError of two lines.
@pytest.mark.parametrize(
    ("old", "new", "store", "expected"),
    [
        (
            'dataset = "data"',
            'dataset = "sinagot.toml"',
            _XNAT_STORE,
            "path.dataset: cannot create",
        ),
        ('dataset = "data"', 'dataset = "sinagot.toml/x"', _XNAT_STORE, "path.dataset: cannot"),
        ('dataset = "data"', f'dataset = "{"x" * 300}"', _XNAT_STORE, "255-byte limit"),
        ('dataset = "data"', f'dataset = "{"x" * 300}"', "", "255-byte limit"),
        ('scripts = "scripts"', f'scripts = "{"x" * 300}"', "", "255-byte limit"),
        ('scripts = "scripts"', 'scripts = "a\\nb"', "", "path.scripts: folder"),
        ("[tasks.MMN]", '[tasks."M\\nN"]', "", "is not a valid task name"),
        ('dataset = "data"', 'dataset = "a\\u0000b"', _XNAT_STORE, "path.dataset: got"),
    ],
    ids=[
        "a file",
        "below a file",
        "too long xnat",
        "too long local",
        "scripts",
        "newline",
        "key",
        "nul",
    ],
)
def test_a_path_the_disk_refuses_is_one_clear_line(
    tmp_path: Path, old: str, new: str, store: str, expected: str
) -> None:
    assert old in DEMO_CONFIG
    assert expected in _error(tmp_path, DEMO_CONFIG.replace(old, new, 1) + store)


def test_a_script_name_at_the_limit_loads(tmp_path: Path) -> None:
    script = "a" * 252
    path = write_project(tmp_path, config=DEMO_CONFIG.replace('["accuracy"]', f'["{script}"]'))
    (tmp_path / "scripts" / "behavior" / f"{script}.py").write_text("")
    assert load_settings(path).modalities["behavior"].scripts == (script,)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in _error(tmp_path, "[path\n")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml")


def test_task_override_for_unknown_task(tmp_path: Path) -> None:
    config = DEMO_CONFIG + '\n[modalities.EEG.tasks.RX]\nscripts = ["preprocess"]\n'
    assert "modalities.EEG.tasks.RX: unknown task 'RX'; did you mean 'RS'?" in _error(
        tmp_path, config
    )
    config = DEMO_CONFIG + '\n[modalities.behavior.tasks.RS]\nscripts = ["accuracy"]\n'
    assert "task 'RS' does not record 'behavior'" in _error(tmp_path, config)


def test_xnat_store_requires_server_project_user_and_hides_password(tmp_path: Path) -> None:
    base = DEMO_CONFIG.replace('dataset = "data"', 'dataset = "work"')
    message = _error(tmp_path, base + '\n[store]\ntype = "xnat"\nserver = "http://127.0.0.1:1"\n')
    assert "store.project: is required for type 'xnat'" in message
    config = base + (
        '\n[store]\ntype = "xnat"\nserver = "http://127.0.0.1:1"\nproject = "P"\n'
        'user = "alice"\npassword = "s3cret"\n'
    )
    settings = load_settings(write_project(tmp_path, config=config))
    assert settings.dataset_dir == (tmp_path / "work").resolve() and settings.dataset_dir.is_dir()
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(settings.store)
    assert settings.store.password == "s3cret"


def test_dask_address_conflicts_with_cluster_options(tmp_path: Path) -> None:
    config = DEMO_CONFIG.replace("[dask]\n", '[dask]\naddress = "tcp://127.0.0.1:8786"\n')
    assert "conflict with dask.address" in _error(tmp_path, config)


def test_dask_jobqueue_refuses_local_cluster_options(tmp_path: Path) -> None:
    config = DEMO_CONFIG.replace("[dask]\n", '[dask]\njobqueue = "slurm"\n')
    message = _error(tmp_path, config)
    assert "dask.threads_per_worker: is a LocalCluster option" in message
    assert "jobqueue.yaml" in message
    jobs = config.replace("threads_per_worker = 1\nprocesses = false\n", "")
    assert load_settings(write_project(tmp_path, config=jobs)).dask.jobqueue == "slurm"


def test_local_cluster_options_authenticate_every_comm() -> None:
    threads = local_cluster_options(DaskSettings(n_workers=2, processes=False))
    assert threads["protocol"] == "inproc://"  # no TCP port for Dask comms at all
    assert "host" not in threads and "security" not in threads
    assert threads["worker_dashboard_address"] == "127.0.0.1:0"
    assert threads["dashboard_address"] == "127.0.0.1:0"
    assert threads["scheduler_kwargs"] == {"dashboard": False}
    processes = local_cluster_options(DaskSettings())
    assert processes["host"] == "127.0.0.1"
    assert processes["protocol"] == "tls://"
    assert processes["security"].require_encryption
    # A fresh certificate each time: two clusters never trust each other.
    assert (
        processes["security"].tls_ca_file
        != local_cluster_options(DaskSettings())["security"].tls_ca_file
    )


def test_dask_address_refuses_plaintext_to_another_host(tmp_path: Path) -> None:
    def dask_table(lines: str) -> str:
        return DEMO_CONFIG.replace(
            "[dask]\nn_workers = 2\nthreads_per_worker = 1\nprocesses = false\n",
            f"[dask]\n{lines}",
        )

    assert "[dask]\nn_workers = 2\nthreads_per_worker = 1\nprocesses = false\n" in DEMO_CONFIG
    message = _error(tmp_path, dask_table('address = "tcp://10.1.2.3:8786"\n'))
    assert "dask.address: 'tcp://10.1.2.3:8786' is plaintext to another host" in message
    assert "allow_plaintext = true" in message
    for host in ("127.0.0.1", "localhost", "[::1]"):
        config = dask_table(f'address = "tcp://{host}:8786"\n')
        assert load_settings(write_project(tmp_path, config=config)).dask.address
    trusted = dask_table('address = "tcp://10.1.2.3:8786"\nallow_plaintext = true\n')
    assert load_settings(write_project(tmp_path, config=trusted)).dask.allow_plaintext

    assert "only applies to dask.address" in _error(
        tmp_path, dask_table("allow_plaintext = true\n")
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = f'address = "tls://10.1.2.3:8786"\ntls_ca_file = "{ca}"\n'
    assert "dask.tls_cert: is missing" in _error(tmp_path, dask_table(tls))
    message = _error(tmp_path, dask_table(tls + f'tls_cert = "{tmp_path / "no.pem"}"\n'))
    assert "dask.tls_cert: no file" in message
    settings = load_settings(
        write_project(tmp_path, config=dask_table(tls + f'tls_cert = "{ca}"\n'))
    ).dask
    assert (settings.tls_ca_file, settings.tls_cert, settings.tls_key) == (ca, ca, None)
    message = _error(tmp_path, dask_table(f'tls_ca_file = "{ca}"\n'))
    assert "dask.tls_ca_file: only applies to a tls:// dask.address" in message


def test_store_settings_alone_need_only_the_store_table(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text('[store]\ncache_dir = "cache"\nrace_condition_delay = 2\n')
    store = load_store_settings(config)
    assert store.cache.dir == (tmp_path / "cache").resolve()
    assert store.cache.race_condition_delay == 2.0
    assert load_store_settings(write_project(tmp_path, config=DEMO_CONFIG)).type == "local"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[store]\nmax_connections = 0\n",
            "store.max_connections: got 0; set it to an integer >= 1",
        ),
        ('[store]\ntype = "xnat"\n', "store.server: is required for type 'xnat'"),
        ('[stor]\ncache_dir = "c"\n', "stor: unknown key; did you mean 'store'?"),
        ("[store\n", "not valid TOML"),
    ],
)
def test_store_settings_alone_are_validated_in_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "cache.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_store_settings(config)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_polling_defaults_and_a_minimum_above_the_interval_is_one_clear_line(
    tmp_path: Path,
) -> None:
    settings = load_settings(write_project(tmp_path / "a", config=DEMO_CONFIG))
    assert settings.daemon.min_poll_interval == 10.0
    assert settings.daemon.server_recovery == 40.0
    # A poll interval shorter than the default minimum is its own minimum.
    short = DEMO_CONFIG + "\n[daemon]\npoll_interval = 4.0\n"
    assert load_settings(write_project(tmp_path / "b", config=short)).daemon.min_poll_interval == 4
    wrong = DEMO_CONFIG + "\n[daemon]\npoll_interval = 30.0\nmin_poll_interval = 45.0\n"
    message = _error(tmp_path / "c", wrong)
    assert "daemon.min_poll_interval: 45 s is longer than poll_interval (30 s)" in message
