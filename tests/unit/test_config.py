"""config.py and settings.py: defaults < TOML file < MYSQLGATE_* environment < flags, and
validation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from mysqlgate.config import Config, Listener, load
from mysqlgate.settings import (
    SETTINGS,
    ConfigError,
    env_name,
    flag_name,
    parse_setting,
    parse_size,
    show_default,
)


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mysqlgate.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults() -> None:
    cfg = load(None, {}, {})
    up = cfg.upstream
    assert (up.user, up.password, up.host, up.port) == ("root", "", "127.0.0.1", 3306)
    assert up.unix_socket is None and up.database is None
    assert up.ssl_mode == "preferred" and up.connect_timeout == 5.0
    assert cfg.listeners == (Listener(host="127.0.0.1", port=6033),)
    assert cfg["pool.size"] is None  # auto
    assert cfg["pool.idle_timeout"] is None  # auto
    assert cfg["pool.result_buffer"] == 16 << 20
    assert cfg["limits.max_packet"] == 1 << 30
    assert cfg["listen.allow_remote"] is False
    assert set(cfg.values) == {s.name for s in SETTINGS}


@pytest.mark.parametrize(
    ("file", "env", "flag", "expected"),
    [
        (None, None, None, 10.0),
        ("3", None, None, 3.0),
        ("3", "4", None, 4.0),
        ("3", "4", "5", 5.0),
        (None, "4", None, 4.0),
        (None, None, "5", 5.0),
        ("3", None, "5", 5.0),
    ],
)
def test_precedence(tmp_path: Path, file: str | None, env: str | None, flag: str | None,
                    expected: float) -> None:
    path = write_toml(tmp_path, f"[pool]\nqueue_timeout = {file}\n") if file else None
    environ = {"MYSQLGATE_POOL_QUEUE_TIMEOUT": env} if env else {}
    flags = {"pool.queue_timeout": flag} if flag else {}
    assert load(path, environ, flags)["pool.queue_timeout"] == expected


def test_precedence_of_the_upstream_url(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[upstream]\nurl = "mysql://file@h1/"\n')
    env = {"MYSQLGATE_UPSTREAM_URL": "mysql://env@h2/"}
    assert load(path, {}, {}).upstream.user == "file"
    assert load(path, env, {}).upstream.user == "env"
    assert load(path, env, {"upstream.url": "mysql://flag@h3/"}).upstream.user == "flag"
    # A flag given as None (argparse's "not given") does not override.
    assert load(path, env, {"upstream.url": None}).upstream.user == "env"


def test_short_environment_names() -> None:
    cfg = load(None, {"MYSQLGATE_UPSTREAM": "mysql://short@db/",
                      "MYSQLGATE_LISTEN": "127.0.0.1:7000"}, {})
    assert cfg.upstream.user == "short"
    assert cfg.listeners == (Listener(host="127.0.0.1", port=7000),)
    # The full name wins over the short one.
    cfg = load(None, {"MYSQLGATE_UPSTREAM": "mysql://short@db/",
                      "MYSQLGATE_UPSTREAM_URL": "mysql://full@db/"}, {})
    assert cfg.upstream.user == "full"


def test_env_and_flag_names() -> None:
    assert env_name("pool.queue_timeout") == "MYSQLGATE_POOL_QUEUE_TIMEOUT"
    assert flag_name("pool.queue_timeout") == "--pool-queue-timeout"
    assert env_name("listen.allow_remote") == "MYSQLGATE_LISTEN_ALLOW_REMOTE"


def test_values_from_the_environment_are_parsed() -> None:
    cfg = load(None, {
        "MYSQLGATE_POOL_SIZE": "4",
        "MYSQLGATE_POOL_IDLE_TIMEOUT": "280",
        "MYSQLGATE_POOL_RESULT_BUFFER": "4MiB",
        "MYSQLGATE_LISTEN_ADDRESSES": "127.0.0.1:6033, unix:/tmp/gate.sock",
        "MYSQLGATE_LISTEN_ALLOW_REMOTE": "off",
    }, {})
    assert cfg["pool.size"] == 4
    assert cfg["pool.idle_timeout"] == 280.0
    assert cfg["pool.result_buffer"] == 4 << 20
    assert cfg.listeners == (Listener(host="127.0.0.1", port=6033),
                             Listener(path="/tmp/gate.sock"))
    assert cfg["listen.allow_remote"] is False


def test_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
[upstream]
url = "mariadb://app@db.internal:3307/shop"
ssl_mode = "required"

[listen]
addresses = ["127.0.0.1:6033", "unix:/run/mysqlgate.sock"]

[pool]
size = "auto"
max_lifetime = 600

[limits]
max_packet = "64MiB"
""")
    cfg = load(path, {}, {})
    assert cfg.upstream.host == "db.internal" and cfg.upstream.port == 3307
    assert cfg.upstream.database == "shop"
    assert cfg.upstream.ssl_mode == "required"
    assert [str(listener) for listener in cfg.listeners] == [
        "127.0.0.1:6033", "unix:/run/mysqlgate.sock"]
    assert cfg["pool.size"] is None
    assert cfg["pool.max_lifetime"] == 600.0
    assert cfg["limits.max_packet"] == 64 << 20


# -- the upstream URL ------------------------------------------------------------


def test_url_with_percent_encoded_parts() -> None:
    url = "mysql://app%40corp:p%40ss%3Aw%2Fo%25rd@db.example.com:3307/my%20db"
    up = load(None, {}, {"upstream.url": url}).upstream
    assert up.user == "app@corp"
    assert up.password == "p@ss:w/o%rd"
    assert (up.host, up.port) == ("db.example.com", 3307)
    assert up.database == "my db"
    assert up.address == "db.example.com:3307"


def test_url_with_unix_socket() -> None:
    url = "mysql://app:pw@localhost/shop?unix_socket=/run/mysqld/mysqld.sock"
    up = load(None, {}, {"upstream.url": url}).upstream
    assert up.unix_socket == "/run/mysqld/mysqld.sock"
    assert up.address == "/run/mysqld/mysqld.sock"
    assert up.database == "shop"
    assert up.password == "pw"


def test_url_ipv6_host() -> None:
    up = load(None, {}, {"upstream.url": "mysql://u@[::1]:3310/"}).upstream
    assert (up.host, up.port, up.database) == ("::1", 3310, None)


def test_password_sources(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n", encoding="utf-8")
    url = {"upstream.url": "mysql://app:from-url@db/"}
    assert load(None, {}, url).upstream.password == "from-url"
    with_file = {**url, "upstream.password_file": str(secret)}
    assert load(None, {}, with_file).upstream.password == "from-file"
    env = {"MYSQLGATE_UPSTREAM_PASSWORD": "from-env"}
    assert load(None, env, with_file).upstream.password == "from-env"


def test_password_file_keeps_inner_whitespace(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(" two words \r\n", encoding="utf-8")
    cfg = load(None, {}, {"upstream.password_file": str(secret)})
    assert cfg.upstream.password == " two words "


def test_upstream_password_is_not_in_its_repr() -> None:
    up = load(None, {}, {"upstream.url": "mysql://app:hunter2@db/"}).upstream
    assert "hunter2" not in repr(up)


# -- listeners -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "listener"),
    [
        ("127.0.0.1:6033", Listener(host="127.0.0.1", port=6033)),
        ("127.0.0.2:6033", Listener(host="127.0.0.2", port=6033)),
        ("localhost:6033", Listener(host="localhost", port=6033)),
        ("[::1]:6033", Listener(host="::1", port=6033)),
        (":6033", Listener(host="127.0.0.1", port=6033)),
        ("unix:/tmp/gate.sock", Listener(path="/tmp/gate.sock")),
        ("/tmp/gate.sock", Listener(path="/tmp/gate.sock")),
    ],
)
def test_loopback_listeners(address: str, listener: Listener) -> None:
    assert load(None, {}, {"listen.addresses": [address]}).listeners == (listener,)


@pytest.mark.parametrize("address", ["0.0.0.0:6033", "[::]:6033", "192.168.1.5:6033",
                                     "db.example.com:6033"])
def test_non_loopback_listener_needs_allow_remote(address: str) -> None:
    with pytest.raises(ConfigError, match="allow_remote"):
        load(None, {}, {"listen.addresses": [address]})
    cfg = load(None, {"MYSQLGATE_LISTEN_ALLOW_REMOTE": "1"}, {"listen.addresses": [address]})
    assert len(cfg.listeners) == 1


# -- sizes and bad values --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("16MiB", 16 << 20),
        ("16mb", 16 << 20),
        (" 16 MiB ", 16 << 20),
        ("1G", 1 << 30),
        ("1.5k", 1536),
        ("0", 0),
        ("100b", 100),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "16TiB", "-1", "16 MiBs", "1,5k", "k"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"pool.size": "many"}, "pool.size"),
        ({"pool.queue_timeout": "soon"}, "pool.queue_timeout"),
        ({"pool.idle_timeout": "never"}, "pool.idle_timeout"),
        ({"pool.result_buffer": "big"}, "pool.result_buffer"),
        ({"listen.allow_remote": "maybe"}, "listen.allow_remote"),
        ({"upstream.ssl_mode": "sometimes"}, "ssl_mode"),
        ({"upstream.url": "postgres://u@h/"}, "mysql://"),
        ({"listen.addresses": []}, "listen.addresses"),
        ({"listen.addresses": "  "}, "listen.addresses"),
        ({"listen.addresses": ["nonsense"]}, "nonsense"),
        ({"listen.addresses": ["127.0.0.1:http"]}, "127.0.0.1:http"),
        ({"upstream.url": "mysql://u@db:notaport/"}, "upstream.url"),
        ({"upstream.url": "mysql://u@db:99999/"}, "upstream.url"),
    ],
)
def test_bad_values_raise_config_error(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, {}, flags)


@pytest.mark.parametrize(
    "name",
    ["pool.size", "pool.reserve", "pool.queue_timeout", "pool.max_lifetime",
     "pool.result_buffer", "limits.max_clients", "limits.max_packet"],
)
def test_negative_numbers_are_refused(tmp_path: Path, name: str) -> None:
    section, key = name.split(".")
    path = write_toml(tmp_path, f"[{section}]\n{key} = -1\n")
    with pytest.raises(ConfigError, match=name):
        load(path, {}, {})


def test_bad_value_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="pool.reserve"):
        load(None, {"MYSQLGATE_POOL_RESERVE": "one"}, {})


# -- messages: what is wrong; what is accepted (issue 15) --------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"pool.size": "lots"}, "pool.size (from --pool-size): 'lots' is not a whole number; "
                                "accepted: a whole number of connections, 1 or more, or auto"),
        ({"pool.size": "0"}, "pool.size (from --pool-size): '0' is below 1; accepted: "),
        ({"pool.reserve": "-1"}, "pool.reserve (from --pool-reserve): '-1' is negative; "
                                 "accepted: a whole number of connections, 0 or more"),
        ({"upstream.ssl_mode": "maybe"},
         "upstream.ssl_mode (from --upstream-ssl-mode): unknown value 'maybe'; accepted: "
         "disabled, preferred, required, verify_ca, verify_identity"),
        ({"pool.queue_timeout": "soon"}, "pool.queue_timeout (from --pool-queue-timeout): "
                                         "'soon' is not a number; accepted: seconds"),
        ({"pool.idle_timeout": "never"}, "'never' is not a number; accepted: seconds, a "
                                         "number of 0 or more (e.g. 2.5), or auto"),
        ({"pool.idle_transaction_timeout": "x"}, "accepted: seconds, a number of 0 or more "
                                                 "(e.g. 2.5), auto or off"),
        ({"pool.result_buffer": "big"}, "'big' is not a size; accepted: bytes, a whole "
                                        "number or one with a unit k, M or G"),
        ({"listen.allow_remote": "maybe"}, "'maybe' is neither true nor false; accepted: "
                                           "true or false"),
        ({"log.level": "loud"}, "unknown value 'loud'; accepted: debug, info, warning, error"),
        ({"auth.plugin": "pam"}, "accepted: auto, mysql_native_password, caching_sha2"),
        ({"upstream.url": "postgres://u:secret@h/"},
         "upstream.url: 'postgres://u:***@h/' does not start with mysql:// or mariadb://; "
         "accepted: mysql://user:password@host:port/database"),
        ({"upstream.url": "mysql://u:secret@db:99999/"},
         "upstream.url: the port of 'mysql://u:***@db:99999/' is not a port number; "
         "accepted: "),
        ({"listen.addresses": ["127.0.0.1"]},
         "listen.addresses: '127.0.0.1' has no port; accepted: host:port or unix:/path"),
        ({"listen.addresses": ["127.0.0.1:http"]},
         "listen.addresses: the port of '127.0.0.1:http' is not a port number; accepted: "
         "host:port with a port of 1 to 65535, or unix:/path"),
        ({"admin.listen": "localhost"}, "admin.listen: 'localhost' has no port; accepted: "),
        ({"metrics.listen": "unix:/tmp/m.sock"},
         "metrics.listen: unix:/tmp/m.sock is a unix socket; accepted: host:port (HTTP), or "
         "off"),
        ({"listen.tls_key": "key.pem"},
         "listen.tls_key is set but listen.tls_cert is not; set both, or neither"),
        ({"listen.require_tls": "true"},
         "listen.require_tls is on but there is no certificate to offer; set listen.tls_cert "
         "and listen.tls_key, or turn require_tls off"),
        ({"upstream.password_file": "/nonexistent/pw"},
         "upstream.password_file: cannot read /nonexistent/pw: No such file or directory; "
         "accepted: a file this user can read"),
        ({"admin.password_file": "/nonexistent/pw"},
         "admin.password_file: cannot read /nonexistent/pw: No such file or directory"),
    ],
)
def test_messages_say_what_is_wrong_and_what_is_accepted(flags: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load(None, {}, flags)
    assert message in str(excinfo.value)
    assert "secret" not in str(excinfo.value)


def test_messages_say_where_a_value_came_from(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[pool]\nsize = \"lots\"\n")
    with pytest.raises(ConfigError, match=re.escape(f"pool.size (from {path}): 'lots'")):
        load(path, {}, {})
    with pytest.raises(ConfigError, match=r"pool.size \(from MYSQLGATE_POOL_SIZE\): 'x'"):
        load(None, {"MYSQLGATE_POOL_SIZE": "x"}, {})
    with pytest.raises(ConfigError, match=r"log.level \(from --log-level\): unknown value"):
        load(None, {}, {"log.level": "loud"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pool]\nsizes = 3\n", "unknown setting 'sizes' in [pool]; known: size, reserve, "
                                 "queue_timeout"),
        ("[nope]\nsize = 3\n", "unknown section [nope]; known: [admin], [auth], [fleet], [limits], "
                                "[listen], [log], [metrics], [pool], [upstream]"),
        ("pool = 3\n", "pool is a value; accepted: a [pool] table of settings"),
        ("[pool]\nsize = \n", "not valid TOML: "),
        ("[[upstream]]\npassword = 'x'\n", "[[upstream]] entry 1 has no url; accepted: url = "),
        ("[[upstream]]\nurl = 'mysql://a@h/'\nssl_mode = 'maybe'\n",
         "[[upstream]] entry 1: upstream.ssl_mode: unknown value 'maybe'; accepted: disabled, "
         "preferred, required, verify_ca, verify_identity"),
        ("[[upstream]]\nurl = 'mysql://a@h/'\nconnect_timeout = 'soon'\n",
         "[[upstream]] entry 1: upstream.connect_timeout: 'soon' is not a number; accepted: "),
    ],
)
def test_file_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load(write_toml(tmp_path, text), {}, {})
    assert message in str(excinfo.value)


def test_a_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match="--config /nonexistent.toml: cannot read it: No "
                                          "such file or directory"):
        load("/nonexistent.toml", {}, {})


def test_defaults_are_written_as_a_user_writes_them() -> None:
    """--help and SHOW CONFIG show the README's words (auto, off, 16MiB), never None."""
    shown = {s.name: show_default(s) for s in SETTINGS}
    assert shown["pool.size"] == "auto"
    assert shown["pool.idle_timeout"] == "auto"
    assert shown["pool.idle_transaction_timeout"] == "auto"
    assert shown["metrics.listen"] == "off"
    assert shown["pool.result_buffer"] == "16MiB"
    assert shown["limits.max_packet"] == "1GiB"
    assert shown["pool.queue_timeout"] == "10"
    assert shown["listen.allow_remote"] == "false"
    assert shown["upstream.password"] is None  # not set: nothing to show
    # Each default parses: a textual default is a value like any other.
    for setting in SETTINGS:
        parse_setting(setting.name, setting.default)


@pytest.mark.parametrize(
    "text",
    [
        "[pool]\nsizes = 3\n",  # unknown key
        "[nope]\nsize = 3\n",  # unknown section
        "pool = 3\n",  # not a table
        "[pool]\nsize = \n",  # not TOML at all
    ],
)
def test_bad_toml_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(write_toml(tmp_path, text), {}, {})


# -- Config ------------------------------------------------------------------------


def test_public_masks_the_password() -> None:
    cfg = load(None, {}, {"upstream.password": "hunter2"})
    public = cfg.public()
    assert public["upstream.password"] == "***"
    assert "hunter2" not in repr(public)
    assert public["pool.queue_timeout"] == 10.0
    assert load(None, {}, {}).public()["upstream.password"] is None  # nothing to mask


def test_public_masks_a_password_given_in_the_url() -> None:
    cfg = load(None, {}, {"upstream.url": "mysql://app:hunter2@db:3306/shop"})
    public = cfg.public()
    assert "hunter2" not in repr(public)
    assert public["upstream.url"] == ["mysql://app:***@db:3306/shop"]  # the rest stays


def test_config_is_frozen() -> None:
    cfg = load(None, {}, {})
    assert isinstance(cfg, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.upstreams = cfg.upstreams  # type: ignore[misc]


# -- several accounts --------------------------------------------------------------


def test_several_upstreams_from_flags_and_environment() -> None:
    flags = {"upstream.url": ["mysql://a:pa@db1/x", "mysql://b:pb@db2:3307/y"]}
    cfg = load(None, {}, flags)
    assert [(u.user, u.password, u.host, u.port, u.database) for u in cfg.upstreams] == [
        ("a", "pa", "db1", 3306, "x"), ("b", "pb", "db2", 3307, "y")]
    assert cfg.upstream is cfg.upstreams[0]
    env = {"MYSQLGATE_UPSTREAM": "mysql://c@h/ mysql://d@h/"}
    assert [u.user for u in load(None, env, {}).upstreams] == ["c", "d"]


def test_upstream_entries_in_the_file_have_their_own_settings(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    path = write_toml(tmp_path, f"""
[upstream]
ssl_mode = "required"

[[upstream]]
url = "mysql://shop@db/shop"
password_file = "{secret}"

[[upstream]]
url = "mysql://blog:pw@db/blog"
ssl_mode = "disabled"
connect_timeout = 2
""")
    with pytest.raises(ConfigError):  # a TOML file cannot have both; error, not a guess
        load(path, {}, {})
    path = write_toml(tmp_path, f"""
[[upstream]]
url = "mysql://shop@db/shop"
password_file = "{secret}"
ssl_mode = "required"

[[upstream]]
url = "mysql://blog:pw@db/blog"
connect_timeout = 2
""")
    shop, blog = load(path, {}, {}).upstreams
    assert (shop.user, shop.password, shop.ssl_mode) == ("shop", "from-file", "required")
    assert (blog.user, blog.password, blog.ssl_mode, blog.connect_timeout) == (
        "blog", "pw", "preferred", 2.0)
    # A flag names the accounts instead of the file's entries.
    assert [u.user for u in load(path, {}, {"upstream.url": "mysql://x@h/"}).upstreams] == ["x"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"upstream.url": ["mysql://a@h1/", "mysql://a@h2/"]}, "more than one upstream"),
        ({"upstream.url": ["mysql://a@h/", "mysql://b@h/"], "upstream.password": "x"},
         "apply to one upstream"),
        ({"upstream.url": []}, "no upstream given; accepted: one or more mysql://"),
    ],
)
def test_several_upstreams_refused(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, {}, flags)
