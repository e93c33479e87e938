"""Every setting of mysqlgate, in one declarative table: its name, how its value is
read, its default, what it is for and what it accepts. config.py fills it from a TOML
file, MYSQLGATE_* variables and flags; the CLI's --help, the admin console's SHOW
CONFIG and SET, and the README's table are all read from it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
