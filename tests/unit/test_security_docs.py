"""docs/security.md's SQL for modern ClickHouse servers parses on a current ClickHouse (chDB),
and deploy/local/clickhouse_config.py writes the TLS port and the users of the local 18.16."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _sql_statements() -> list[str]:
    text = (REPO / "docs" / "security.md").read_text()
    block = text.split("```sql\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_documented_grants_parse_on_a_current_clickhouse() -> None:
    chdb = pytest.importorskip("chdb")
    statements = _sql_statements()
    assert any(s.startswith("CREATE USER IF NOT EXISTS cx_reader") and "readonly = 1" in s
               for s in statements)
    for statement in statements:
        ast = str(chdb.query(f"EXPLAIN AST {statement}", "CSV"))
        assert "Query" in ast, statement
    with pytest.raises(Exception, match="Syntax error"):  # the check can fail
        chdb.query("EXPLAIN AST GRANT BOGUS ON cx.* TO cx_reader", "CSV")


@pytest.mark.skipif(not Path("/etc/clickhouse-server/config.xml").is_file(),
                    reason="needs the Debian clickhouse-server package's config")
def test_the_local_clickhouse_config_has_tls_and_the_two_users(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    env = {**os.environ, "CX_CH_WRITER_PASSWORD": "writer-pw-123",
           "CX_CH_READER_PASSWORD": "reader-pw-456"}
    subprocess.run([sys.executable, str(REPO / "deploy/local/clickhouse_config.py"),
                    "--state", str(tmp_path), "--logs", str(tmp_path), "--tls-port", "19441",
                    "--tls-dir", str(tls)], env=env, check=True, timeout=60)
    config = ET.parse(tmp_path / "config.xml").getroot()
    assert config.findtext("tcp_port_secure") == "19441"
    assert config.findtext("openSSL/server/certificateFile") == str(tls / "server.pem")
    assert [n.text for n in config.findall("listen_host")] == ["127.0.0.1"]
    users_text = (tmp_path / "users.xml").read_text()
    assert "writer-pw-123" not in users_text and "reader-pw-456" not in users_text
    assert (tmp_path / "users.xml").stat().st_mode & 0o077 == 0
    users = ET.parse(tmp_path / "users.xml").getroot().find("users")
    assert users is not None
    for name, password, profile in (("cx_writer", "writer-pw-123", "default"),
                                    ("cx_reader", "reader-pw-456", "readonly")):
        user = users.find(name)
        assert user is not None
        assert user.findtext("password_sha256_hex") == hashlib.sha256(password.encode()).hexdigest()
        assert user.findtext("profile") == profile
        assert [d.text for d in user.findall("allow_databases/database")] == ["cx"]
    default = users.find("default")
    assert default is not None
    assert sorted(ip.text or "" for ip in default.findall("networks/ip")) == ["127.0.0.1", "::1"]
    profiles = ET.parse(tmp_path / "users.xml").getroot()
    assert profiles.findtext("profiles/readonly/readonly") == "1"
