"""`~/.benchmatch/cluster.json` is trusted only for the very daemon that wrote it, and cluster temp
roots keep Ray's address file to themselves (no Ray started here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from cluster import local


@pytest.fixture
def state_file(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "STATE_DIR", tmp_path)
    monkeypatch.setattr(local, "STATE_FILE", tmp_path / "cluster.json")
    return tmp_path / "cluster.json"


@pytest.fixture
def stranger():
    """Some other process of this user: a recycled pid would look like this."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _info(pid: int, started: float, uid: int | None = None) -> local.ClusterInfo:
    return local.ClusterInfo(address="127.0.0.1:1", dashboard_url="http://127.0.0.1:2", temp_dir="/t",
                             service_discovery_file="/t/sd.json", profiles=["local-1c"], pid=pid,
                             pid_started=started, uid=os.getuid() if uid is None else uid)


def test_a_recycled_pid_is_not_our_daemon_and_is_never_signalled(state_file, stranger):
    state_file.write_text(json.dumps(asdict(_info(stranger.pid, started=time.time() - 3600))))
    assert local.read_state() is None
    assert local.down() is False
    time.sleep(0.2)
    assert stranger.poll() is None, "cluster down signalled a process it did not start"


def test_another_users_state_is_ignored(state_file, stranger):
    started = local._process_start(stranger.pid)
    state_file.write_text(json.dumps(asdict(_info(stranger.pid, started, uid=os.getuid() + 1))))
    assert local.read_state() is None
    state_file.write_text(json.dumps(asdict(_info(stranger.pid, started))))
    assert local.read_state().pid == stranger.pid  # the same process, same start time, same user: ours


def test_a_daemon_that_exited_unreaped_is_gone_and_down_reaps_it(state_file):
    """The daemon is a child of the process that ran `up`: once it exits it is a zombie until
    reaped, which must read as gone (it once made `down` wait out its whole 60 s timeout)."""
    import psutil

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    while psutil.Process(exited.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    assert local._process_start(exited.pid) is None
    exited.wait()

    daemon = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "lambda *a: exit(0)); time.sleep(60)"])
    state_file.write_text(json.dumps(asdict(_info(daemon.pid, local._process_start(daemon.pid)))))
    assert local.down(timeout_s=60) is True
    with pytest.raises(ChildProcessError):  # down collected its exit status: no zombie is left behind
        os.waitpid(daemon.pid, os.WNOHANG)


def test_old_state_files_without_identity_are_ignored(state_file):
    state_file.write_text(json.dumps({"address": "x", "dashboard_url": "y", "temp_dir": "t",
                                      "service_discovery_file": "s", "profiles": [], "pid": os.getpid()}))
    assert local.read_state() is None


def test_orphaned_temp_roots_are_removed_and_live_ones_kept(tmp_path, stranger):
    dead = tmp_path / f"{local.TEMP_PREFIX}dead"
    live = tmp_path / f"{local.TEMP_PREFIX}live"
    foreign = tmp_path / f"{local.TEMP_PREFIX}foreign"  # no owner file: not ours to judge
    for d in (dead, live, foreign):
        (d / "ray").mkdir(parents=True)
    (dead / local.OWNER_FILE).write_text(json.dumps({"pid": stranger.pid, "started": 1.0}))
    (live / local.OWNER_FILE).write_text(json.dumps({"pid": stranger.pid,
                                                     "started": local._process_start(stranger.pid)}))
    assert local.clean_orphaned_temp_roots(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.exists() and foreign.exists()


def test_the_ray_tmpdir_is_scoped_to_a_cluster_start(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_TMPDIR", "/users/own")
    with local._ray_tmpdir(tmp_path):
        from ray._common.utils import get_ray_address_file

        assert get_ray_address_file(None) == str(tmp_path / "ray" / "ray_current_cluster")
    assert os.environ["RAY_TMPDIR"] == "/users/own"


def test_the_ray_token_is_written_and_kept_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    path = local.secure_token_file()
    assert path == tmp_path / ".ray" / "auth_token" and len(path.read_text()) >= 32
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    token = path.read_text()
    os.chmod(path, 0o644)  # as Ray itself writes it
    local.secure_token_file()
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == token  # tightened, not replaced
