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


# Every parser below raises ValueError saying what is wrong with the value; parse_setting
# adds the setting's name and what it accepts, so each message reads "what is wrong;
# what is accepted" (`pool.size: 'lots' is not a whole number; accepted: ...`).


def whole_number(value: Any) -> int:
    if isinstance(value, bool):  # TOML true is not a number of anything
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None


def parse_size(value: Any) -> int:
    """`16MiB`, `512k`, `1048576` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{value!r} is not a size")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def or_auto(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, or None for `auto` (the value is then derived from the server)."""

    def check(value: Any) -> Any:
        if value is None or str(value).strip().lower() == "auto":
            return None
        return parse(value)

    return check


def at_least(minimum: float, parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`parse`, refusing values below `minimum` (None, i.e. auto, passes)."""

    def check(value: Any) -> Any:
        result = parse(value)
        if result is not None and not isinstance(result, str) and result < minimum:
            raise ValueError(f"{value!r} is " + ("negative" if minimum == 0
                                                 else f"below {minimum:g}"))
        return result

    return check


def non_negative(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return at_least(0, parse)


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"unknown value {value!r}")
        return text

    return check


def parse_seconds_auto_or_off(value: Any) -> float | str | None:
    """seconds, `auto` (None) or `off`."""
    if str(value).strip().lower() == "off":
        return "off"
    seconds_or_auto: float | None = or_auto(non_negative(number))(value)
    return seconds_or_auto


def parse_address_or_off(value: Any) -> str | None:
    """host:port, unix:/path, or `off` (None)."""
    text = str(value).strip()
    return None if text.lower() in ("off", "") else text


BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False, "": False}


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in BOOLEAN_WORDS:
        raise ValueError(f"{value!r} is neither true nor false")
    return BOOLEAN_WORDS[text]


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
    # As a user writes it ("auto", "16MiB"); parsed like any other source. None: unset.
    default: Any
    help: str
    accepts: str  # the values parse takes, for messages: "what is wrong; what is accepted"
    reloadable: bool = False
    secret: bool = False


count = non_negative(whole_number)
seconds = non_negative(number)
size = non_negative(parse_size)

SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
AUTH_PLUGINS = ("auto", "mysql_native_password", "caching_sha2_password")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
SECONDS = "seconds, a number of 0 or more (e.g. 2.5)"
SIZE = "bytes, a whole number or one with a unit k, M or G (e.g. 512k, 16MiB, 1GiB)"
BOOLEAN = "true or false (also 1/0, yes/no, on/off)"
ADDRESS_OR_OFF = "host:port, unix:/path, or off"


def one_of(options: tuple[str, ...]) -> str:
    return ", ".join(options)


SETTINGS: tuple[Setting, ...] = (
    Setting("upstream.url", parse_urls, ["mysql://root@127.0.0.1:3306/"],
            "mysql://user:password@host:port/database (?unix_socket=/path for a socket); "
            "several for several accounts, each with a pool of its own",
            "mysql://user:password@host:port/database URLs, separated by spaces"),
    Setting("upstream.password", str, None, "upstream password (overrides the URL's)",
            "any text", secret=True),
    Setting("upstream.password_file", str, None, "file holding the upstream password",
            "a file's path"),
    Setting("upstream.ssl_mode", choice(*SSL_MODES), "preferred", " | ".join(SSL_MODES),
            one_of(SSL_MODES)),
    Setting("upstream.ssl_ca", str, None, "CA bundle for verify_ca / verify_identity",
            "a PEM file's path"),
    Setting("upstream.connect_timeout", seconds, 5.0, "seconds for one upstream connect+login",
            SECONDS),
    Setting("listen.addresses", parse_list, ["127.0.0.1:6033"],
            "host:port and/or unix:/path listeners",
            "host:port and unix:/path addresses, separated by commas"),
    Setting("listen.allow_remote", parse_bool, False,
            "allow listening on non-loopback addresses", BOOLEAN),
    Setting("listen.tls_cert", str, None, "certificate (PEM) offered to clients asking for TLS",
            "a PEM file's path"),
    Setting("listen.tls_key", str, None, "its private key (PEM)", "a PEM file's path"),
    Setting("listen.require_tls", parse_bool, False,
            "refuse clients without TLS on listeners beyond loopback", BOOLEAN),
    Setting("pool.size", or_auto(at_least(1, whole_number)), "auto",
            "upstream connections at most; auto = max_user_connections - reserve",
            "a whole number of connections, 1 or more, or auto"),
    Setting("pool.reserve", count, 1,
            "connections of the account left free for others (a person's shell): size "
            "auto stays this far below the limit; with fleet.mode on, every mysqlgate "
            "and program of the account together do", "a whole number of connections, "
            "0 or more"),
    Setting("pool.queue_timeout", seconds, 10.0, "seconds a client waits for a connection",
            SECONDS, reloadable=True),
    Setting("pool.idle_timeout", or_auto(seconds), "auto",
            "close idle upstream connections after this; auto = 90% of @@wait_timeout "
            "(270 s for 300 s), at most 600 s", SECONDS + ", or auto", reloadable=True),
    Setting("pool.max_lifetime", seconds, 3600.0, "replace upstream connections after this",
            SECONDS, reloadable=True),
    Setting("pool.ping_after", seconds, 5.0,
            "ping an idle connection idle longer than this before handing it out",
            SECONDS, reloadable=True),
    Setting("pool.idle_transaction_timeout", parse_seconds_auto_or_off, "auto",
            "roll back a transaction (or end a pin) idle this long while clients wait for a "
            "connection; auto = the server's wait_timeout; off = never",
            SECONDS + ", auto or off", reloadable=True),
    Setting("pool.result_buffer", size, "16MiB",
            "bytes read ahead from the server per client before back-pressure", SIZE),
    Setting("fleet.mode", choice("auto", "off"), "auto",
            "share the account's max_user_connections with other mysqlgates through the "
            "server, keeping pool.reserve free across them; auto = when the account has "
            "such a limit; off = size the pool as if alone", "auto or off"),
    Setting("fleet.floor", count, 1,
            "connections kept while other mysqlgates need the account's, as long as this "
            "one's clients are active", "a whole number of connections, 0 or more"),
    Setting("fleet.quiet_after", seconds, 2.0,
            "after this long without a client statement, every idle connection may go to "
            "other mysqlgates that need it (the floor no longer holds)", SECONDS),
    Setting("limits.max_clients", count, 10000, "client connections at most",
            "a whole number of connections, 0 or more"),
    Setting("limits.max_packet", size, "1GiB", "largest client packet accepted", SIZE),
    Setting("auth.plugin", choice(*AUTH_PLUGINS), "auto",
            "plugin offered to clients: auto (as upstream) | mysql_native_password | "
            "caching_sha2_password", one_of(AUTH_PLUGINS)),
    Setting("admin.listen", parse_address_or_off, "127.0.0.1:6032",
            "admin console: host:port or unix:/path, or off", ADDRESS_OR_OFF),
    Setting("admin.user", str, "admin", "admin console user", "a user name"),
    Setting("admin.password", str, None,
            "admin console password; without one, only this OS user (and root) may log in",
            "any text", secret=True),
    Setting("admin.password_file", str, None, "file holding the admin console password",
            "a file's path"),
    Setting("metrics.listen", parse_address_or_off, "off",
            "Prometheus /metrics and /healthz over HTTP: host:port, or off",
            "host:port, or off"),
    Setting("log.level", choice(*LOG_LEVELS), "info", " | ".join(LOG_LEVELS),
            one_of(LOG_LEVELS), reloadable=True),
    Setting("log.format", choice(*LOG_FORMATS), "text", " | ".join(LOG_FORMATS),
            one_of(LOG_FORMATS)),
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


def parse_setting(name: str, raw: Any, origin: str = "") -> Any:
    """One setting's value from text (or TOML); ConfigError naming the setting (and
    where the value came from: a stale environment variable can surprise), what is wrong
    with the value and what the setting accepts."""
    setting = SETTINGS_BY_NAME[name]
    try:
        return None if raw is None else setting.parse(raw)
    except (TypeError, ValueError) as exc:
        where = f" (from {origin})" if origin else ""
        raise ConfigError(f"{name}{where}: {exc}; accepted: {setting.accepts}") from None


def show_default(setting: Setting) -> str | None:
    """The default as the README and a config file write it; None when unset."""
    default = setting.default
    if default is None:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, list):
        return " ".join(str(item) for item in default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


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
