"""The configuration: settings.py's table filled from a TOML file, MYSQLGATE_* variables
and command-line flags (later ones win), frozen into a Config with its upstream
accounts and listeners parsed."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from .settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    SHORT_FLAGS,
    ConfigError,
    env_name,
    flag_name,
    parse_setting,
)


@dataclass(frozen=True)
class Upstream:
    user: str
    password: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str | None = None
    database: str | None = None
    ssl_mode: str = "preferred"
    ssl_ca: str | None = None
    connect_timeout: float = 5.0

    @property
    def address(self) -> str:
        return self.unix_socket or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Listener:
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    upstreams: tuple[Upstream, ...]  # one account each; clients pick one by user name
    listeners: tuple[Listener, ...]
    values: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def upstream(self) -> Upstream:
        """The first account: its server's greeting is the one clients see first."""
        return self.upstreams[0]

    def public(self) -> dict[str, Any]:
        """Settings safe to show (admin output, logs): secrets masked."""
        shown = {
            name: ("***" if SETTINGS_BY_NAME[name].secret and value else value)
            for name, value in self.values.items()
        }
        shown["upstream.url"] = [mask_url_password(url) for url in shown["upstream.url"]]
        return shown


def mask_url_password(url: str) -> str:
    """mysql://user:secret@host/db -> mysql://user:***@host/db."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _read_secret(name: str, path: str) -> str:
    """A password file's content (without its final newline)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}; accepted: "
                          "a file this user can read, holding only the password") from None


def load(file: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Config:
    """Defaults < file < environment < flags."""
    raw: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    origin: dict[str, str] = {}  # where each value that is not the default came from
    tables: list[dict[str, Any]] = []  # [[upstream]] entries of the file
    if file:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"--config {file}: cannot read it: {exc.strerror or exc}") \
                from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        sections = sorted({s.name.split(".")[0] for s in SETTINGS})
        for section, items in data.items():
            if section == "upstream" and isinstance(items, list):
                tables = _upstream_tables(file, items)
                continue
            if section not in sections:
                raise ConfigError(f"{file}: unknown section [{section}]; known: "
                                  f"{', '.join(f'[{name}]' for name in sections)}")
            if not isinstance(items, dict):
                raise ConfigError(f"{file}: {section} is a value; accepted: a [{section}] "
                                  "table of settings")
            for key, value in items.items():
                name = f"{section}.{key}"
                if name not in SETTINGS_BY_NAME:
                    known = [s.name.split(".")[1] for s in SETTINGS
                             if s.name.startswith(section + ".")]
                    raise ConfigError(f"{file}: unknown setting {key!r} in [{section}]; "
                                      f"known: {', '.join(known)}")
                raw[name] = value
                origin[name] = file
    for s in SETTINGS:
        if env_name(s.name) in env:
            raw[s.name] = env[env_name(s.name)]
            origin[s.name] = env_name(s.name)
    # Short names also work in the environment: MYSQLGATE_UPSTREAM, MYSQLGATE_LISTEN.
    for short, name in SHORT_FLAGS.items():
        if env_name(short) in env and env_name(name) not in env:
            raw[name] = env[env_name(short)]
            origin[name] = env_name(short)
    short_flags = {name: "--" + short for short, name in SHORT_FLAGS.items()}
    for name, value in flags.items():
        if value is not None:
            raw[name] = value
            origin[name] = short_flags.get(name, flag_name(name))
    values = {s.name: parse_setting(s.name, raw[s.name], origin.get(s.name, ""))
              for s in SETTINGS}
    if tables and (env_name("upstream.url") in env or env_name("upstream") in env
                   or flags.get("upstream.url") is not None):
        tables = []  # the environment or a flag names the accounts now
    upstreams = parse_upstreams(values, tables)
    listeners = tuple(parse_listener(a) for a in values["listen.addresses"])
    if not listeners:
        raise ConfigError("listen.addresses: no listener given; accepted: host:port and "
                          "unix:/path addresses, at least one")
    for listener in listeners:
        if listener.host and not is_loopback(listener.host) and not values["listen.allow_remote"]:
            raise ConfigError(
                f"listen.addresses: {listener} is not on loopback; set listen.allow_remote "
                f"= true (or {env_name('listen.allow_remote')}=1) to allow it"
            )
    if bool(values["listen.tls_cert"]) != bool(values["listen.tls_key"]):
        given, missing = (("listen.tls_cert", "listen.tls_key") if values["listen.tls_cert"]
                          else ("listen.tls_key", "listen.tls_cert"))
        raise ConfigError(f"{given} is set but {missing} is not; set both, or neither")
    if values["listen.require_tls"] and not values["listen.tls_cert"]:
        raise ConfigError("listen.require_tls is on but there is no certificate to offer; "
                          "set listen.tls_cert and listen.tls_key, or turn require_tls off")
    if values["admin.password_file"]:
        values["admin.password"] = _read_secret("admin.password_file",
                                                values["admin.password_file"])
    for name in ("admin.listen", "metrics.listen"):
        if values[name] is None:
            continue
        listener = parse_listener(values[name], name)
        beyond_loopback = listener.host is not None and not is_loopback(listener.host)
        if beyond_loopback and not values["listen.allow_remote"]:
            raise ConfigError(f"{name}: {listener} is not on loopback; set "
                              "listen.allow_remote = true to allow it")
        if name == "admin.listen" and beyond_loopback and not values["admin.password"]:
            raise ConfigError(f"admin.listen: {listener} is beyond loopback and "
                              "admin.password is not set; set admin.password (the console "
                              "never listens there unauthenticated), or listen on loopback")
        if name == "metrics.listen" and listener.path is not None:
            raise ConfigError(f"metrics.listen: {listener} is a unix socket; accepted: "
                              "host:port (HTTP), or off")
    return Config(upstreams, listeners, values)


# What an [[upstream]] entry of the file may set for its own account.
UPSTREAM_KEYS = ("url", "password", "password_file", "ssl_mode", "ssl_ca", "connect_timeout")


def _upstream_tables(file: str, items: list[Any]) -> list[dict[str, Any]]:
    tables = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "url" not in item:
            raise ConfigError(f"{file}: [[upstream]] entry {index + 1} has no url; accepted: "
                              "url = \"mysql://user@host:port/database\" in every entry")
        unknown = set(item) - set(UPSTREAM_KEYS)
        if unknown:
            raise ConfigError(f"{file}: [[upstream]] entry {index + 1}: unknown "
                              f"{', '.join(sorted(unknown))}; known: {', '.join(UPSTREAM_KEYS)}")
        tables.append(item)
    return tables


def parse_upstreams(values: Mapping[str, Any], tables: list[dict[str, Any]]
                    ) -> tuple[Upstream, ...]:
    """Every account: the file's [[upstream]] entries (each may set its own password,
    TLS and timeout, the [upstream] settings apply otherwise), or the URLs given. A
    password setting applies to one URL only: with several, put it in each URL."""
    entries = tables or [{"url": url} for url in values["upstream.url"]]
    if not entries:
        raise ConfigError("upstream.url: no upstream given; accepted: one or more "
                          "mysql://user:password@host:port/database URLs")
    if len(entries) > 1 and not tables and (
        values["upstream.password"] is not None or values["upstream.password_file"]
    ):
        raise ConfigError("upstream.password and upstream.password_file apply to one "
                          "upstream; with several, give each password in its URL (or use "
                          "[[upstream]] entries in the config file)")
    upstreams = []
    for index, entry in enumerate(entries):
        merged = dict(values)
        for key, value in entry.items():
            if key == "url":
                merged["upstream.url"] = str(value)
                continue
            try:
                merged[f"upstream.{key}"] = parse_setting(f"upstream.{key}", value)
            except ConfigError as exc:
                raise ConfigError(f"[[upstream]] entry {index + 1}: {exc}") from None
        upstreams.append(parse_upstream(merged))
    users = [u.user for u in upstreams]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise ConfigError(f"upstream: user {duplicates[0]!r} is given for more than one "
                          "upstream; clients choose their account by user name")
    return tuple(upstreams)


URL_FORM = "mysql://user:password@host:port/database (or mariadb://...)"


def parse_upstream(values: Mapping[str, Any]) -> Upstream:
    text = values["upstream.url"]
    url = urlsplit(text)
    if url.scheme not in ("mysql", "mariadb"):
        raise ConfigError(f"upstream.url: {mask_url_password(text)!r} does not start with "
                          f"mysql:// or mariadb://; accepted: {URL_FORM}")
    query = parse_qs(url.query)
    password = unquote(url.password or "")
    if values["upstream.password_file"]:
        password = _read_secret("upstream.password_file", values["upstream.password_file"])
    if values["upstream.password"] is not None:
        password = values["upstream.password"]
    database = unquote(url.path.lstrip("/")) or None
    try:
        port = url.port or 3306
    except ValueError:  # not a number, or out of range
        raise ConfigError(f"upstream.url: the port of {mask_url_password(text)!r} is not a "
                          f"port number; accepted: {URL_FORM}, the port 1 to 65535") \
            from None
    return Upstream(
        user=unquote(url.username or "root"),
        password=password,
        host=url.hostname or "127.0.0.1",
        port=port,
        unix_socket=query.get("unix_socket", [None])[0],
        database=database,
        ssl_mode=values["upstream.ssl_mode"],
        ssl_ca=values["upstream.ssl_ca"],
        connect_timeout=float(values["upstream.connect_timeout"]),
    )


def parse_listener(text: str, setting: str = "listen.addresses") -> Listener:
    if text.startswith("unix:"):
        return Listener(path=text[5:])
    if text.startswith("/"):
        return Listener(path=text)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(f"{setting}: {text!r} has no port; accepted: host:port or "
                          "unix:/path")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{setting}: the port of {text!r} is not a port number; accepted: "
                          "host:port with a port of 1 to 65535, or unix:/path")
    return Listener(host=host.strip("[]") or "127.0.0.1", port=int(port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment() -> Mapping[str, str]:
    return os.environ
