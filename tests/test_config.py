"""The config file: every mistake is named with its key path, and no secret is ever shown."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.configfile import load_config
from syncd.errors import ConfigError
from syncd.units import format_duration, parse_duration

VALID = """
target: {dsn: "postgresql://app:hunter2@db.example/app"}
sources:
  crm: {kind: oracle, dsn: "db:1521/FREEPDB1", user: bqs, password: "s3cr3t-oracle"}
  demo: {kind: postgres, dsn: "postgresql://127.0.0.1/postgres"}
syncs:
  opps:
    source: crm
    table: CRM.OPPORTUNITIES
    key: [OPPORTUNITY_ID]
    cursor: LAST_UPDATE_DATE
    lookback: 5m
    target_table: public.minimal_opportunities
    schedule: {every: 15m}
default_sync: opps
api: {token: "t0ken-value"}
"""

SECRETS = ("hunter2", "s3cr3t-oracle", "t0ken-value")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    for secret in SECRETS:
        assert secret not in message
    return message


def test_the_shipped_config_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "config.yaml")
    assert config.default_sync == "oracle_opportunities"
    # The README's daylight-saving rule: a server clock read as 'database' repeats an hour
    # syncd cannot foresee, so the shipped sync's lookback must cover it.
    sync = config.syncs["oracle_opportunities"]
    assert config.sources[sync.source].cursor_time_zone == "database"
    assert sync.lookback >= timedelta(hours=1)


def test_a_valid_file_reads_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    name, sync = config.sync(None)
    assert name == "opps"
    assert sync.target.schema == "public" and sync.target.name == "minimal_opportunities"
    assert sync.schedule is not None and sync.schedule.every == timedelta(minutes=15)
    assert sorted(config.secrets()) == sorted(SECRETS)
    assert "hunter2" not in repr(config) and "s3cr3t" not in repr(config)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("batch_size: 1000", "batchsize: 1000"),
            r"syncs.opps.batchsize: unknown key 'batchsize'; did you mean 'batch_size'\?",
        ),
        (
            ("source: crm", "source: erp"),
            r"syncs.opps.source: unknown source 'erp' \(configured: crm, demo\)",
        ),
        (
            ("table: CRM.OPPORTUNITIES", "table: CRM.OPPORTUNITIES\n    query: SELECT 1"),
            r"give exactly one of 'table' or 'query'",
        ),
        (
            ("batch_size: 1000", "batch_size: 0"),
            r"syncs.opps.batch_size: Input should be greater than or equal to 1 \(found 0\)",
        ),
        (
            ("lookback: 5m", "lookback: 5 minutes"),
            r"syncs.opps.lookback: expected a duration such as 30s, 15m, 1h or 2d"
            r" \(found '5 minutes'\)",
        ),
        (("{every: 15m}", "{cron: '61 * * * *'}"), r"syncs.opps.schedule.cron: .*61"),
        (
            ("{every: 15m}", "{hourly: true}"),
            r"syncs.opps.schedule: expected \{every: DURATION\} or \{cron:",
        ),
        (
            ("kind: oracle", "kind: mysql"),
            r"sources.crm.kind: expected one of 'postgres', 'oracle' \(found 'mysql'\)",
        ),
        (("default_sync: opps", "default_sync: nope"), r"default_sync: unknown sync 'nope'"),
        (
            ("key: [OPPORTUNITY_ID]", "key: [OPPORTUNITY_ID, OPPORTUNITY_ID]"),
            r"syncs.opps.key: names must not repeat: 'OPPORTUNITY_ID'$",
        ),
    ],
)
def test_mistakes_are_named_with_their_key_path(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = VALID.replace("    schedule:", "    batch_size: 1000\n    schedule:")
    assert change[0] in text
    message = error_for(tmp_path, text.replace(*change, 1))
    assert re.search(expected, message, re.MULTILINE), message


def test_a_bad_password_value_is_not_echoed(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, VALID.replace('password: "s3cr3t-oracle"', "password: [s3cr3t-oracle]")
    )
    assert "sources.crm.password" in message


def test_environment_values_and_defaults(tmp_path: Path) -> None:
    text = VALID.replace(
        '"postgresql://127.0.0.1/postgres"', '"${DEMO_DSN:-postgresql://fallback/db}"'
    )
    text = text.replace('"s3cr3t-oracle"', '"${ORACLE_PASSWORD}"')
    config = load_config(write(tmp_path, text), environ={"ORACLE_PASSWORD": "from-env"})
    assert config.sources["demo"].dsn == "postgresql://fallback/db"
    assert config.sources["crm"].secret() == "from-env"
    with pytest.raises(
        ConfigError, match=r"sources.crm.password: environment variable ORACLE_PASSWORD is not set"
    ):
        load_config(write(tmp_path, text), environ={})


def test_password_file_relative_to_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oracle").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(
        write(tmp_path, VALID.replace('password: "s3cr3t-oracle"', "password_file: oracle"))
    )
    assert config.sources["crm"].secret() == "from-credential"


def test_empty_token_means_no_token(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID.replace('"t0ken-value"', '""')))
    assert config.api.token is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "1.5h", "-1m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    assert "not valid YAML" in error_for(tmp_path, "syncs: [unclosed")
    assert "expected a mapping at the top level, found a list" in error_for(tmp_path, "- a\n- b\n")


def test_the_cli_exits_78_naming_the_problem_and_not_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("lookback: 5m", "lookback: soon"))
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert "syncs.opps.lookback" in done.stderr and "'soon'" in done.stderr
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout


def test_a_missing_config_file_exits_78(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(tmp_path / "absent.yaml"), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert "cannot read the config file" in done.stderr


def problems(message: str) -> list[str]:
    """The lines under "invalid configuration:", one per problem."""
    head, *lines = message.splitlines()
    assert head.endswith(": invalid configuration:"), message
    return [line.strip() for line in lines]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Checks across keys name their own key path, with nothing around it.
        (
            ("source: crm", "source: erp"),
            "syncs.opps.source: unknown source 'erp' (configured: crm, demo)",
        ),
        (
            ("default_sync: opps", "default_sync: nope"),
            "default_sync: unknown sync 'nope'",
        ),
        (
            ("key: [OPPORTUNITY_ID]", "query: SELECT 1"),
            "syncs.opps: give exactly one of 'table' or 'query'",
        ),
        (
            ("{every: 15m}", "{evry: 15m}"),
            "syncs.opps.schedule: expected {every: DURATION} or {cron: 'MIN HOUR DOM MON DOW'}",
        ),
        # An unknown key is matched only against the keys valid where it stands.
        (
            ("user: bqs,", "user: bqs, statment_timeout: 5s,"),
            "sources.crm.statment_timeout: unknown key 'statment_timeout';"
            " did you mean 'statement_timeout'?",
        ),
        # Each of these is a key somewhere else in the file, but not where it was put.
        (
            ('dsn: "postgresql://127.0.0.1/postgres"', 'dsn: "postgresql://h/db", user: me'),
            "sources.demo.user: unknown key 'user'",
        ),
        (
            ('dsn: "postgresql://127.0.0.1/postgres"', 'dsn: "postgresql://h/db", state_schema: s'),
            "sources.demo.state_schema: unknown key 'state_schema'",
        ),
        (
            ("lookback: 5m", "lookback: 5m\n    connect_timeout: 5s"),
            "syncs.opps.connect_timeout: unknown key 'connect_timeout'",
        ),
        (
            ("{every: 15m}", "{every: 15m, attempts: 3}"),
            "syncs.opps.schedule.attempts: unknown key 'attempts'",
        ),
        (
            ("{every: 15m}", "{every: 15m, cronn: x}"),
            "syncs.opps.schedule.cronn: unknown key 'cronn'",
        ),
    ],
)
def test_a_mistake_reads_as_one_sentence_with_its_key_path(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    assert change[0] in VALID
    assert problems(error_for(tmp_path, VALID.replace(*change, 1))) == [expected]


@pytest.mark.parametrize("option", ["nul: fail", "snapshot: scn"])
def test_an_oracle_only_option_on_a_postgresql_source_names_its_key_path(
    tmp_path: Path, option: str
) -> None:
    text = VALID.replace("source: crm", f"source: demo\n    {option}")
    text = text.replace("    cursor: LAST_UPDATE_DATE\n    lookback: 5m\n", "")
    key = option.split(":")[0]
    assert problems(error_for(tmp_path, text)) == [
        f"syncs.opps.{key}: applies to Oracle sources only, and source 'demo' is PostgreSQL"
    ]


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    assert error_for(tmp_path, text).endswith(
        "config.yaml: the file holds no settings; it needs 'target' and 'syncs'"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((VALID.split("\n")[1] + "\n", ""), ["target: required key is missing"]),
        (
            ('{dsn: "postgresql://app:hunter2@db.example/app"}', "{}"),
            ["target.dsn: required key is missing"],
        ),
        (
            (VALID[VALID.index("syncs:") : VALID.index("default_sync")], "syncs: {}\n"),
            ["syncs: no sync is configured: a daemon without one has nothing to do"],
        ),
        (
            (VALID[VALID.index("syncs:") : VALID.index("default_sync")], ""),
            ["syncs: required key is missing"],
        ),
    ],
)
def test_a_config_without_a_target_or_any_sync_is_refused(
    tmp_path: Path, change: tuple[str, str], expected: list[str]
) -> None:
    text = VALID.replace(*change, 1).replace("default_sync: opps\n", "")
    assert problems(error_for(tmp_path, text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID + "syncs: {}\n",
            "line 17, column 1: not valid YAML: the key 'syncs' is given twice in one mapping"
            " (first on line 6)",
        ),
        (
            VALID.replace("    key: [OPPORTUNITY_ID]", "    key: [OPPORTUNITY_ID]\n    key: [X]"),
            "line 11, column 5: not valid YAML: the key 'key' is given twice in one mapping"
            " (first on line 10)",
        ),
        (
            VALID.replace("{every: 15m}", "{every: 15m, every: 1h}"),
            "line 14, column 28: not valid YAML: the key 'every' is given twice in one mapping"
            " (first on line 14)",
        ),
        (
            VALID.replace("sources:\n", "sources:\n  demo: {kind: oracle, dsn: x, user: y}\n"),
            "line 6, column 3: not valid YAML: the key 'demo' is given twice in one mapping"
            " (first on line 4)",
        ),
    ],
)
def test_a_key_given_twice_is_refused_at_every_depth_naming_it_and_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert error_for(tmp_path, text) == f"{tmp_path / 'config.yaml'}: {expected}"


def test_a_merge_key_may_still_be_overridden_beside_it(tmp_path: Path) -> None:
    merged = "syncs:\n  opps:\n    <<: {batch_size: 10, lookback: 1m}\n"
    config = load_config(write(tmp_path, VALID.replace("syncs:\n  opps:\n", merged)))
    assert config.syncs["opps"].batch_size == 10
    assert config.syncs["opps"].lookback == timedelta(minutes=5)


def test_invalid_yaml_is_placed_by_line_without_quoting_the_line(tmp_path: Path) -> None:
    # PyYAML's own message quotes the line it stopped at, and this one holds a password.
    text = "target:\n  dsn: postgresql://db/app\n  password: hunter2: x\n"
    assert error_for(tmp_path, text) == (
        f"{tmp_path / 'config.yaml'}: line 3, column 20: not valid YAML:"
        " mapping values are not allowed here"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file holds no settings"),
        ('target: {dsn: "postgresql://127.0.0.1:1/x"}\nsyncs: {}\n', "no sync is configured"),
        (VALID + "syncs: {}\n", "the key 'syncs' is given twice"),
    ],
)
def test_the_cli_exits_78_for_a_config_that_would_sync_nothing(
    tmp_path: Path, text: str, expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(write(tmp_path, text)), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stdout
    assert expected in done.stderr and done.stdout == ""
