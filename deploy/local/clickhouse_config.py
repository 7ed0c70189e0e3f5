"""Write a private clickhouse-server config for deploy/local from the Debian package's defaults.

Copies /etc/clickhouse-server/config.xml and users.xml, moves every path into the state dir,
listens on 127.0.0.1 only and drops the interserver port (single node; frees 9009).
"""

from __future__ import annotations

import argparse
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

SYSTEM_DIR = Path("/etc/clickhouse-server")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--http-port", type=int, default=8123)
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
    tree.write(state / "config.xml", encoding="utf-8", xml_declaration=True)
    shutil.copyfile(SYSTEM_DIR / "users.xml", state / "users.xml")


if __name__ == "__main__":
    main()
