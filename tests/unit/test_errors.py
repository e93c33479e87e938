"""The error catalogue (mysqlgate/errors.py) and the codes written into ERR packets across
the package: never a client-library code (SPEC section 4). The integration tests in
test_error_codes.py show what each client makes of each error; these catch a code put
back where no fault test reaches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mysqlgate import errors

PACKAGE = Path(errors.__file__).resolve().parent
# Written out, not taken from mysqlgate.errors: the test states the rule itself.
CLIENT_CODES = (range(2000, 3000), range(5000, 6000))


def _client_code(code: int) -> bool:
    return any(code in codes for codes in CLIENT_CODES)


def _error_classes() -> list[type[errors.MysqlgateError]]:
    found: list[type[errors.MysqlgateError]] = []
    pending: list[type[errors.MysqlgateError]] = [errors.MysqlgateError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_each_error_class_sends_a_server_code(cls: type[errors.MysqlgateError]) -> None:
    err = cls("what happened").to_err()
    assert not _client_code(err.code), (cls.__name__, err.code)
    assert 1000 <= err.code < 2000 or 3000 <= err.code < 5000, err.code
    assert len(err.sqlstate) == 5 and err.sqlstate.isalnum(), err.sqlstate
    assert err.message == "mysqlgate: what happened"


def test_catalogue_codes_are_server_codes() -> None:
    codes = {name: value for name, value in vars(errors).items()
             if name.startswith("ER_") and isinstance(value, int)}
    assert codes
    assert not [name for name, code in codes.items() if _client_code(code)]
    # The client libraries' own (CR_*) have no place among the codes mysqlgate sends.
    assert not [name for name in vars(errors) if name.startswith("CR_")]
    assert errors.is_client_code(2013) and errors.is_client_code(2006)
    assert errors.is_client_code(5001) and not errors.is_client_code(1158)


def _literal_codes(tree: ast.AST) -> list[tuple[int, int]]:
    """(line, code) of every integer literal given as the code of send_error(...) or
    ERR(...), and of every class attribute `code = <int>`."""
    found: list[tuple[int, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", "")
            if name in ("send_error", "ERR", "error") and node.args:
                first = node.args[0] if name != "error" or len(node.args) < 2 else node.args[1]
                if isinstance(first, ast.Constant) and isinstance(first.value, int):
                    found.append((node.lineno, first.value))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, int) and \
                any(isinstance(t, ast.Name) and (t.id == "code" or t.id.startswith("ER_"))
                    for t in node.targets):
            found.append((node.lineno, node.value.value))
    return found


def test_no_client_code_written_anywhere() -> None:
    """A literal code in any module (send_error(2013, ...), ERR(2006, ...), the admin
    console's error(seq, code, ...)) is a server code."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, code in _literal_codes(ast.parse(path.read_text(), str(path))):
            if _client_code(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {code}")
    assert not offenders, offenders


def test_a_lost_commit_is_not_called_rolled_back() -> None:
    """A statement lost inside a transaction that may have committed it (COMMIT, DDL)
    must not be reported as "nothing of it was committed": the app would run the
    transaction again and write it twice."""
    rolled_back = errors.lost_message(True, "while the statement ran")
    assert "nothing of it was committed" in rolled_back
    maybe = errors.lost_message(True, "while the statement ran", may_commit=True)
    assert "nothing of it was committed" not in maybe
    assert "may or may not have been committed" in maybe
