"""config.py: defaults < TOML file < MYSQLGATE_* environment < flags, and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mysqlgate.config import (
    SETTINGS,
    Config,
    ConfigError,
    Listener,
    env_name,
    flag_name,
    load,
    parse_size,
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
        ({"upstream.url": []}, "at least one upstream"),
    ],
)
def test_several_upstreams_refused(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, {}, flags)
