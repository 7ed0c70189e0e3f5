"""Write a private clickhouse-server config for deploy/local from the Debian package's defaults.

Copies /etc/clickhouse-server/config.xml and users.xml, moves every path into the state dir,
listens on 127.0.0.1 only and drops the interserver port (single node; frees 9009). With
``--tls-dir`` it adds the TLS native port (``tcp_port_secure``, certificate of the local CA) and the
users of docs/security.md: ``cx_writer`` (database cx only) and ``cx_reader`` (read-only, database
cx), whose passwords come from CX_CH_WRITER_PASSWORD / CX_CH_READER_PASSWORD (environment, not
argv, so that ``ps`` never shows them) and are stored as SHA-256 only. ``default`` stays for local
development: it answers on 127.0.0.1 only (``listen_host``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

SYSTEM_DIR = Path("/etc/clickhouse-server")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tls-port", type=int, default=9440)
    parser.add_argument("--tls-dir", type=Path, default=None)
    args = parser.parse_args()
    state: Path = args.state.resolve()
    logs: Path = args.logs.resolve()

    tree = ET.parse(SYSTEM_DIR / "config.xml")
    root = tree.getroot()

    def put(tag: str, value: str) -> None:
        node = root.find(tag)
        if node is None:
            node = ET.SubElement(root, tag)
        node.text = value

    for node in root.findall("listen_host"):
        root.remove(node)
    ET.SubElement(root, "listen_host").text = "127.0.0.1"
    for tag in ("interserver_http_port", "mysql_port", "postgresql_port", "https_port",
                "tcp_port_secure"):
        for node in root.findall(tag):
            root.remove(node)
    put("tcp_port", str(args.tcp_port))
    put("http_port", str(args.http_port))
    put("path", f"{state}/data/")
    put("tmp_path", f"{state}/tmp/")
    put("user_files_path", f"{state}/user_files/")
    put("format_schema_path", f"{state}/format_schemas/")
    put("users_config", str(state / "users.xml"))
    logger = root.find("logger")
    if logger is not None:
        for tag, value in (("log", logs / "clickhouse-server.log"),
                           ("errorlog", logs / "clickhouse-server.err.log"),
                           ("size", "100M"), ("count", "2")):
            node = logger.find(tag)
            if node is None:
                node = ET.SubElement(logger, tag)
            node.text = str(value)
    if args.tls_dir is not None:
        _tls(root, args.tls_dir.resolve(), args.tls_port)
    tree.write(state / "config.xml", encoding="utf-8", xml_declaration=True)
    users = ET.parse(SYSTEM_DIR / "users.xml")
    if args.tls_dir is not None:
        _users(users.getroot())
    users.write(state / "users.xml", encoding="utf-8", xml_declaration=True)
    os.chmod(state / "users.xml", 0o600)


def _tls(root: ET.Element, tls_dir: Path, port: int) -> None:
    """tcp_port_secure with the server certificate of the local CA (18.16 reads <openSSL><server>
    for both https and the secure native port)."""
    ET.SubElement(root, "tcp_port_secure").text = str(port)
    for node in root.findall("openSSL"):
        root.remove(node)
    server = ET.SubElement(ET.SubElement(root, "openSSL"), "server")
    for tag, value in (("certificateFile", tls_dir / "server.pem"),
                       ("privateKeyFile", tls_dir / "server.key"),
                       ("caConfig", tls_dir / "ca.pem"),
                       ("verificationMode", "none"), ("loadDefaultCAFile", "false"),
                       ("cacheSessions", "true"),
                       ("disableProtocols", "sslv2,sslv3,tlsv1,tlsv1_1"),
                       ("preferServerCiphers", "true")):
        ET.SubElement(server, tag).text = str(value)


def _user(users: ET.Element, name: str, password: str, profile: str) -> None:
    for node in users.findall(name):
        users.remove(node)
    user = ET.SubElement(users, name)
    ET.SubElement(user, "password_sha256_hex").text = hashlib.sha256(password.encode()).hexdigest()
    networks = ET.SubElement(user, "networks")
    for ip in ("127.0.0.1", "::1"):
        ET.SubElement(networks, "ip").text = ip
    ET.SubElement(user, "profile").text = profile
    ET.SubElement(user, "quota").text = "default"
    ET.SubElement(ET.SubElement(user, "allow_databases"), "database").text = "cx"


def _users(root: ET.Element) -> None:
    users = root.find("users")
    assert users is not None, "users.xml without <users>"
    for name, variable, profile in (("cx_writer", "CX_CH_WRITER_PASSWORD", "default"),
                                    ("cx_reader", "CX_CH_READER_PASSWORD", "readonly")):
        password = os.environ.get(variable, "")
        if not password:
            raise SystemExit(f"clickhouse_config.py: {variable} is not set")
        _user(users, name, password, profile)
    # The default user keeps no password for local development, but only on loopback.
    default = users.find("default")
    if default is not None:
        for node in default.findall("networks"):
            default.remove(node)
        networks = ET.SubElement(default, "networks")
        for ip in ("127.0.0.1", "::1"):
            ET.SubElement(networks, "ip").text = ip


if __name__ == "__main__":
    main()
