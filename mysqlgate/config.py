"""Settings: one declarative table, filled from a TOML file, MYSQLGATE_* variables and
command-line flags (later ones win), frozen into a Config."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit


class ConfigError(ValueError):
    pass


def parse_size(value: Any) -> int:
    """`16MiB`, `512k`, `1048576` -> bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"not a size: {value!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_seconds_or_auto(value: Any) -> float | None:
    if value is None or str(value).lower() == "auto":
        return None
    return float(value)


def parse_int_or_auto(value: Any) -> int | None:
    if value is None or str(value).lower() == "auto":
        return None
    return int(value)


def non_negative(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, refusing values below zero (None, i.e. auto, passes)."""

    def check(value: Any) -> Any:
        result = parse(value)
        if result is not None and result < 0:
            raise ConfigError(f"must not be negative: {value!r}")
        return result

    return check


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).lower()
        if text not in options:
            raise ConfigError(f"{value!r} is not one of {' | '.join(options)}")
        return text

    return check


def parse_seconds_auto_or_off(value: Any) -> float | str | None:
    """seconds, `auto` (None) or `off`."""
    if str(value).lower() == "off":
        return "off"
    return parse_seconds_or_auto(value)


def parse_address_or_off(value: Any) -> str | None:
    """host:port, unix:/path, or `off` (None)."""
    text = str(value).strip()
    return None if text.lower() in ("off", "") else text


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def parse_urls(value: Any) -> list[str]:
    """One upstream URL or several: a list, or a string of URLs separated by spaces."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value).split()


def parse_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


@dataclass(frozen=True)
class Setting:
    name: str  # dotted: section.key
    parse: Callable[[Any], Any]
    default: Any
    help: str
    reloadable: bool = False
    secret: bool = False


count = non_negative(int)
seconds = non_negative(float)
size = non_negative(parse_size)

SETTINGS: tuple[Setting, ...] = (
    Setting("upstream.url", parse_urls, ["mysql://root@127.0.0.1:3306/"],
            "mysql://user:password@host:port/database (?unix_socket=/path for a socket); "
            "several for several accounts, each with a pool of its own"),
    Setting("upstream.password", str, None, "upstream password (overrides the URL's)",
            secret=True),
    Setting("upstream.password_file", str, None, "file holding the upstream password"),
    Setting("upstream.ssl_mode", str, "preferred",
            "disabled | preferred | required | verify_ca | verify_identity"),
    Setting("upstream.ssl_ca", str, None, "CA bundle for verify_ca / verify_identity"),
    Setting("upstream.connect_timeout", float, 5.0, "seconds for one upstream connect+login"),
    Setting("listen.addresses", parse_list, ["127.0.0.1:6033"],
            "host:port and/or unix:/path listeners"),
    Setting("listen.allow_remote", parse_bool, False,
            "allow listening on non-loopback addresses"),
    Setting("listen.tls_cert", str, None, "certificate (PEM) offered to clients asking for TLS"),
    Setting("listen.tls_key", str, None, "its private key (PEM)"),
    Setting("listen.require_tls", parse_bool, False,
            "refuse clients without TLS on listeners beyond loopback"),
    Setting("pool.size", non_negative(parse_int_or_auto), None,
            "upstream connections at most; auto = max_user_connections - reserve"),
    Setting("pool.reserve", count, 1, "connections left free for humans when size is auto"),
    Setting("pool.queue_timeout", seconds, 10.0, "seconds a client waits for a connection",
            reloadable=True),
    Setting("pool.idle_timeout", parse_seconds_or_auto, None,
            "close idle upstream connections after this; auto = from @@wait_timeout",
            reloadable=True),
    Setting("pool.max_lifetime", seconds, 3600.0, "replace upstream connections after this",
            reloadable=True),
    Setting("pool.ping_after", float, 5.0,
            "ping an idle connection idle longer than this before handing it out",
            reloadable=True),
    Setting("pool.idle_transaction_timeout", parse_seconds_auto_or_off, None,
            "roll back a transaction (or end a pin) idle this long while clients wait for a "
            "connection; auto = the server's wait_timeout; off = never", reloadable=True),
    Setting("pool.result_buffer", size, 16 << 20,
            "bytes read ahead from the server per client before back-pressure"),
    Setting("limits.max_clients", count, 10000, "client connections at most"),
    Setting("limits.max_packet", size, 1 << 30, "largest client packet accepted"),
    Setting("auth.plugin", str, "auto",
            "plugin offered to clients: auto (as upstream) | mysql_native_password | "
            "caching_sha2_password"),
    Setting("admin.listen", parse_address_or_off, "127.0.0.1:6032",
            "admin console: host:port or unix:/path, or off"),
    Setting("admin.user", str, "admin", "admin console user"),
    Setting("admin.password", str, None,
            "admin console password; without one, only this OS user may log in", secret=True),
    Setting("admin.password_file", str, None, "file holding the admin console password"),
    Setting("metrics.listen", parse_address_or_off, None,
            "Prometheus /metrics and /healthz over HTTP: host:port, or off"),
    Setting("log.level", choice("debug", "info", "warning", "error"), "info",
            "debug | info | warning | error", reloadable=True),
    Setting("log.format", choice("text", "json"), "text", "text | json"),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
SHORT_FLAGS = {"upstream": "upstream.url", "listen": "listen.addresses"}


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


def env_name(setting: str) -> str:
    return "MYSQLGATE_" + setting.replace(".", "_").upper()


def flag_name(setting: str) -> str:
    return "--" + setting.replace(".", "-").replace("_", "-")


def parse_setting(name: str, raw: Any) -> Any:
    """One setting's value from text (or TOML); ConfigError naming the setting."""
    try:
        return None if raw is None else SETTINGS_BY_NAME[name].parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def load(file: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Config:
    """Defaults < file < environment < flags."""
    raw: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    tables: list[dict[str, Any]] = []  # [[upstream]] entries of the file
    if file:
        with open(file, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{file}: {exc}") from None
        for section, items in data.items():
            if section == "upstream" and isinstance(items, list):
                tables = _upstream_tables(file, items)
                continue
            if not isinstance(items, dict):
                raise ConfigError(f"{file}: [{section}] must be a table")
            for key, value in items.items():
                name = f"{section}.{key}"
                if name not in SETTINGS_BY_NAME:
                    raise ConfigError(f"{file}: unknown setting {name}")
                raw[name] = value
    for s in SETTINGS:
        if env_name(s.name) in env:
            raw[s.name] = env[env_name(s.name)]
    # Short names also work in the environment: MYSQLGATE_UPSTREAM, MYSQLGATE_LISTEN.
    for short, name in SHORT_FLAGS.items():
        if env_name(short) in env and env_name(name) not in env:
            raw[name] = env[env_name(short)]
    for name, value in flags.items():
        if value is not None:
            raw[name] = value
    values = {s.name: parse_setting(s.name, raw[s.name]) for s in SETTINGS}
    if tables and (env_name("upstream.url") in env or env_name("upstream") in env
                   or flags.get("upstream.url") is not None):
        tables = []  # the environment or a flag names the accounts now
    upstreams = parse_upstreams(values, tables)
    listeners = tuple(parse_listener(a) for a in values["listen.addresses"])
    if not listeners:
        raise ConfigError("listen.addresses: at least one listener is needed")
    for listener in listeners:
        if listener.host and not is_loopback(listener.host) and not values["listen.allow_remote"]:
            raise ConfigError(
                f"listener {listener} is not on loopback; set listen.allow_remote = true "
                f"(or {env_name('listen.allow_remote')}=1) to allow it"
            )
    for upstream in upstreams:
        if upstream.ssl_mode not in SSL_MODES:
            raise ConfigError(f"upstream.ssl_mode: unknown mode {upstream.ssl_mode!r}")
    if bool(values["listen.tls_cert"]) != bool(values["listen.tls_key"]):
        raise ConfigError("listen.tls_cert and listen.tls_key go together")
    if values["listen.require_tls"] and not values["listen.tls_cert"]:
        raise ConfigError("listen.require_tls needs listen.tls_cert and listen.tls_key")
    if values["admin.password_file"]:
        with open(values["admin.password_file"], encoding="utf-8") as fh:
            values["admin.password"] = fh.read().rstrip("\r\n")
    for name in ("admin.listen", "metrics.listen"):
        if values[name] is None:
            continue
        listener = parse_listener(values[name])
        beyond_loopback = listener.host is not None and not is_loopback(listener.host)
        if beyond_loopback and not values["listen.allow_remote"]:
            raise ConfigError(f"{name} {listener} is not on loopback; set "
                              "listen.allow_remote = true to allow it")
        if name == "admin.listen" and beyond_loopback and not values["admin.password"]:
            raise ConfigError("admin.listen is beyond loopback: set admin.password (the "
                              "console never listens there unauthenticated)")
        if name == "metrics.listen" and listener.path is not None:
            raise ConfigError("metrics.listen: host:port (HTTP), not a unix socket")
    return Config(upstreams, listeners, values)


SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
# What an [[upstream]] entry of the file may set for its own account.
UPSTREAM_KEYS = ("url", "password", "password_file", "ssl_mode", "ssl_ca", "connect_timeout")


def _upstream_tables(file: str, items: list[Any]) -> list[dict[str, Any]]:
    tables = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "url" not in item:
            raise ConfigError(f"{file}: [[upstream]] entry {index + 1} needs a url")
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
        raise ConfigError("upstream.url: at least one upstream is needed")
    if len(entries) > 1 and not tables and (
        values["upstream.password"] is not None or values["upstream.password_file"]
    ):
        raise ConfigError("upstream.password and upstream.password_file apply to one "
                          "upstream; with several, give each password in its URL (or use "
                          "[[upstream]] entries in the config file)")
    upstreams = []
    for entry in entries:
        merged = dict(values)
        for key, value in entry.items():
            merged[f"upstream.{key}"] = value
        upstreams.append(parse_upstream(merged))
    users = [u.user for u in upstreams]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise ConfigError(f"upstream: user {duplicates[0]!r} is given for more than one "
                          "upstream; clients choose their account by user name")
    return tuple(upstreams)


def parse_upstream(values: Mapping[str, Any]) -> Upstream:
    url = urlsplit(values["upstream.url"])
    if url.scheme not in ("mysql", "mariadb"):
        raise ConfigError("upstream.url must start with mysql:// or mariadb://")
    query = parse_qs(url.query)
    password = unquote(url.password or "")
    if values["upstream.password_file"]:
        with open(values["upstream.password_file"], encoding="utf-8") as fh:
            password = fh.read().rstrip("\r\n")
    if values["upstream.password"] is not None:
        password = values["upstream.password"]
    database = unquote(url.path.lstrip("/")) or None
    try:
        port = url.port or 3306
    except ValueError as exc:  # not a number, or out of range
        raise ConfigError(f"upstream.url: {exc}") from None
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


def parse_listener(text: str) -> Listener:
    if text.startswith("unix:"):
        return Listener(path=text[5:])
    if text.startswith("/"):
        return Listener(path=text)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(f"listener {text!r}: expected host:port or unix:/path")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listener {text!r}: port {port!r} is not a port number")
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
