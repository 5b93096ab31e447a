"""The unit file: systemd accepts it, and it keeps the hardening we promise."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).parent.parent / "systemd" / "syncd.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    syncd = Path(sys.executable).parent / "syncd"
    assert syncd.exists()
    unit = tmp_path / "syncd.service"
    unit.write_text(UNIT.read_text().replace("/opt/syncd/.venv/bin/syncd", str(syncd)))

    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert "syncd.service" not in done.stderr, done.stderr


def test_the_unit_is_a_hardened_notify_service() -> None:
    s = unit_settings()
    assert s["Service.Type"] == ["notify"]
    assert s["Service.ExecStart"][0].endswith("syncd -c /etc/syncd/config.yaml run")
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.RestartPreventExitStatus"] == ["78"]
    assert int(s["Service.TimeoutStopSec"][0].rstrip("s")) > 30  # the default grace period
    assert s["Service.WatchdogSec"]
    for key, value in {
        "DynamicUser": "yes", "StateDirectory": "syncd", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter": "@system-service",
    }.items():  # fmt: skip
        assert s[f"Service.{key}"] == [value], key
    assert len(s["Service.LoadCredential"]) == 2


def test_the_environment_example_names_only_variables_the_config_uses() -> None:
    root = UNIT.parent.parent
    config = (root / "config.yaml").read_text()
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + (root / "systemd" / "syncd.env.example").read_text())
    for name in parser["env"]:
        assert "${" + name in config, name
