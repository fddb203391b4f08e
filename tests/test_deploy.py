"""deploy/: the torrc, the systemd unit and its sandbox, checked by the real tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
AMANAT = Path(sys.executable).parent / "amanat"


def _unit_with_real_binary(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as shipped, but ExecStart pointing at this checkout's `amanat` (verify checks
    that the binary exists and is executable)."""
    text = text or (DEPLOY / "amanat.service").read_text()
    assert "/opt/amanat/venv/bin/amanat" in text
    unit = tmp_path / "amanat.service"
    unit.write_text(text.replace("/opt/amanat/venv/bin/amanat", str(AMANAT)))
    return unit


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd
def test_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    result = _systemd_analyze("verify", str(_unit_with_real_binary(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_systemd
def test_verify_would_catch_a_misspelt_sandbox_option(tmp_path: Path) -> None:
    """Guards the test above: a typo in a hardening line is reported, not silently ignored."""
    text = (DEPLOY / "amanat.service").read_text().replace("ProtectSystem=", "ProtectSystm=")
    result = _systemd_analyze("verify", str(_unit_with_real_binary(tmp_path, text)))
    assert "Unknown key" in result.stderr


@needs_systemd
def test_unit_sandbox_exposure_is_low(tmp_path: Path) -> None:
    unit = _unit_with_real_binary(tmp_path)
    text = unit.read_text()
    for line in ("ProtectSystem=strict", "ReadWritePaths=/var/lib/amanat", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "LimitCORE=0", "RestrictAddressFamilies=AF_UNIX AF_INET",
                 "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=\n", "User=amanat",
                 "LimitNOFILE=65536", "MemoryMax=", "MemorySwapMax=0", "TasksMax="):
        assert line in text
    # --threshold is on systemd's 0-100 scale: fail above an exposure of 2.0 ("OK" is < 4).
    result = _systemd_analyze("security", "--offline=true", "--threshold=20", str(unit))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overall exposure level for amanat.service" in result.stdout


def test_crypto_and_web_stack_run_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is safe: pynacl, argon2-cffi, aiohttp and sqlite work with the
    kernel's own W^X rule (PR_SET_MDWE) switched on, and the rule is really enforced."""
    script = textwrap.dedent("""
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            print("no-mdwe"); sys.exit(0)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            print("wx-allowed"); sys.exit(1)
        except OSError:
            pass
        import sqlite3, aiohttp, sqlalchemy
        from argon2.low_level import hash_secret_raw, Type
        from keys import age
        from keys.codename import CHEAPEST, derive_source_keys
        from onion.client_auth import ClientKeyPair
        from onion.services import generate_service_key, onion_address
        identity = age.X25519Identity.generate()
        blob = age.encrypt(b"testimony", [identity.recipient()])
        assert age.decrypt(blob, [identity]) == b"testimony"
        hash_secret_raw(b"pw", b"saltsaltsalt", 1, 8, 1, 32, Type.ID)
        from keys.codename import generate_codename
        derive_source_keys(generate_codename(), b"s" * 16, CHEAPEST)
        ClientKeyPair.generate(); onion_address(generate_service_key())
        sqlite3.connect(":memory:").execute("select 1")
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    if result.stdout.strip() == "no-mdwe":
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def _torrc_for_tmp(tmp_path: Path, text: str) -> Path:
    tmp_path.chmod(0o700)
    text = text.replace("/var/lib/tor", str(tmp_path / "lib")).replace(
        "/run/amanat", str(tmp_path / "run"))
    torrc = tmp_path / "torrc"
    torrc.write_text(text)
    return torrc


def _verify_torrc(tmp_path: Path, torrc: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tor", "--defaults-torrc", "/dev/null", "-f", str(torrc),
         "--DataDirectory", str(tmp_path / "data"), "--verify-config"],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")
def test_torrc_is_valid_for_this_tor(tmp_path: Path) -> None:
    text = (DEPLOY / "torrc").read_text()
    for line in ("HiddenServicePoWDefensesEnabled 1", "SafeLogging 1",
                 "HiddenServicePort 80 unix:/run/amanat/source.sock",
                 "HiddenServicePort 80 unix:/run/amanat/transfer.sock",
                 "SocksPort 127.0.0.1:9050", "HiddenServiceMaxStreams "):
        assert line in text
    result = _verify_torrc(tmp_path, _torrc_for_tmp(tmp_path, text))
    assert result.returncode == 0, result.stdout
    assert "Configuration was valid" in result.stdout
    bad = text.replace("HiddenServicePoWDefensesEnabled", "HiddenServicePoWDefenseEnabled")
    result = _verify_torrc(tmp_path, _torrc_for_tmp(tmp_path, bad))
    assert result.returncode != 0  # the check above really checks


def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


DEV = DEPLOY.parent / "dev"


def test_dev_help_answers() -> None:
    result = subprocess.run([str(DEV), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert all(f"./dev {cmd}" in result.stdout for cmd in ("demo", "test", "bench"))
    unknown = subprocess.run([str(DEV), "bogus"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2
    assert "./dev demo" in unknown.stderr


def test_dev_demo_installs_amanat_without_the_test_tools(tmp_path: Path) -> None:
    # A stand-in interpreter records what ./dev asks of pip and of the venv's commands.
    calls = tmp_path / "calls"
    recorder = f'#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n'
    fake_python = tmp_path / "python3"
    fake_python.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        mkdir -p "$3/bin"
        for tool in python pybabel amanat; do
            printf '%s' '{recorder}' > "$3/bin/$tool"; chmod +x "$3/bin/$tool"
        done
        """))
    fake_python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python),
           "AMANAT_VENV": str(tmp_path / "venv")}
    result = subprocess.run([str(DEV), "demo", "--no-tor"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    pip_installs = [c for c in calls.read_text().splitlines() if "pip install" in c]
    assert pip_installs
    assert all("[test]" not in c for c in pip_installs), pip_installs
    assert "amanat demo --no-tor" in calls.read_text()
