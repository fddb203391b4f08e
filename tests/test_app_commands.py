"""`amanat demo` and `amanat serve` as real processes: files, demo.json, signals, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from keys.identity_file import open_credential, open_identity

AMANAT = [sys.executable, "-m", "dropbox.cli"]


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared: {process.communicate()}")
        time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_demo_serves_writes_demo_json_and_exits_0_on_signal(tmp_path, stop):
    data = tmp_path / "demo"
    process = subprocess.Popen(
        [*AMANAT, "demo", "--data", str(data), "--port", "0", "--no-tor", "--cheap-kdf"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for(data / "demo.json", process)
        state = json.loads((data / "demo.json").read_text())
        assert state["url"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(state["url"] + "/", timeout=10) as response:
            assert response.status == 200
            assert b'id="start"' in response.read()
            assert response.headers.get("Server") is None
        identity = open_identity(Path(state["investigator_identity"]).read_bytes(),
                                 state["investigator_passphrase"])
        assert identity.label == "Demo investigator"
        # the transfer credential beside it, same passphrase, holding no age identity
        credential_path = Path(state["investigator_transfer_credential"])
        assert credential_path.parent == Path(state["investigator_identity"]).parent
        assert credential_path.stat().st_mode & 0o077 == 0
        credential = open_credential(credential_path.read_bytes(),
                                     state["investigator_passphrase"])
        assert credential.label == "Demo investigator"
        assert bytes(credential.signing_key) != bytes(identity.signing_key)
        assert Path(state["config"]).is_file()
        assert (data / "instance_salt").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    assert state["url"] in out.decode()
    assert state["investigator_passphrase"] in out.decode()  # printed once, at creation


@pytest.mark.slow
def test_demo_reuses_its_folder_without_reprinting_the_passphrase(tmp_path):
    data = tmp_path / "demo"
    previous_url = None
    for run in range(2):
        process = subprocess.Popen(
            [*AMANAT, "demo", "--data", str(data), "--port", "0", "--no-tor", "--cheap-kdf"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:  # until this run has written its own demo.json
            wait_for(data / "demo.json", process)
            state = json.loads((data / "demo.json").read_text())
            if state["url"] != previous_url or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        previous_url = state["url"]
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert len(state["investigator_passphrase"].split()) == 7
        printed = state["investigator_passphrase"] in out.decode()
        assert printed == (run == 0)


def test_serve_refuses_a_keyring_that_does_not_verify(tmp_path, demo_org):
    keyring_path = demo_org.root / "org" / "keyring.json"
    document = json.loads(keyring_path.read_text())
    document["keyring"]["version"] += 1  # changed after signing
    keyring_path.write_text(json.dumps(document))
    result = subprocess.run([*AMANAT, "serve", "--config", str(demo_org.config_path)],
                            capture_output=True, timeout=60, env={**os.environ})
    assert result.returncode == 1
    assert b"signature" in result.stderr
    assert not (demo_org.root / "data" / "amanat.sqlite3").exists()


def test_serve_refuses_a_public_address(tmp_path, demo_org):
    text = demo_org.config_path.read_text().replace('listen = "127.0.0.1:0"',
                                                    'listen = "0.0.0.0:8080"', 1)
    demo_org.config_path.write_text(text)
    result = subprocess.run([*AMANAT, "serve", "--config", str(demo_org.config_path)],
                            capture_output=True, timeout=60)
    assert result.returncode == 1
    assert b"refusing to listen on 0.0.0.0" in result.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl for HTTP over a unix socket")
def test_serve_on_a_unix_socket(tmp_path, demo_org):
    socket_path = tmp_path / "amanat.sock"
    text = demo_org.config_path.read_text().replace('listen = "127.0.0.1:0"',
                                                    f'listen = "unix:{socket_path}"', 1)
    demo_org.config_path.write_text(text)
    process = subprocess.Popen([*AMANAT, "serve", "--config", str(demo_org.config_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(socket_path, process)
        result = subprocess.run(["curl", "-s", "-i", "--unix-socket", str(socket_path),
                                 "http://amanat/"], capture_output=True, timeout=30)
        assert result.stdout.startswith(b"HTTP/1.1 200")
        assert b"\nServer:" not in result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
