"""Mutation testing: prove that the test suite notices when a critical guarantee breaks.

For each mutation in catalogue.py: copy the repository (mysqlgate/, tests/, pyproject.toml)
to a temp dir, check that each snippet occurs exactly once (else STALE: the catalogue
has fallen behind the code), apply the replacement, run the mutation's tests from the
copy's root with `-x`, and record whether any failed. First a baseline: the same tests
on an unmutated copy must pass, or a "caught" would mean nothing; tests that fail there
are dropped from every mutation's selection (and the run fails).

    .venv/bin/python tests/mutations/run.py [--only NAME ...] [--list] [--check] [--jobs N]

Exits non-zero when a mutation is not caught, is stale, or cannot be judged, or when
the baseline fails. See README.md in this directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from catalogue import MUTATIONS, K, Mutation, Selector

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
COPIED = ("mysqlgate", "tests", "pyproject.toml", "setup.py")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
PYTEST_FLAGS = ("-q", "-p", "no:cacheprovider", "-rfE")
# After SIGINT pytest tears its fixtures down (servers, gates); then SIGKILL.
INTERRUPT_GRACE = 30.0
PROBE_MARK = "mysqlgate-mutation-probe:"

# Verdicts.
CAUGHT = "yes"
NOT_CAUGHT = "NO"
STALE = "STALE"
BROKEN = "BROKEN"
NO_VALID_TEST = "NO VALID TEST"
TIMEOUT = "TIMEOUT"
ERROR = "ERROR"


@dataclass
class PytestRun:
    """What one pytest invocation did."""

    returncode: int | None  # None: killed after the timeout
    seconds: float
    ran: int = 0
    failed: list[str] = field(default_factory=list)  # node ids, in the order they ran


@dataclass
class Result:
    mutation: Mutation
    verdict: str
    detail: str = ""
    selected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # selected, but fail unmutated
    run: PytestRun | None = None
    log: Path | None = None


# -- copies and edits -----------------------------------------------------------------------------


def make_copy(origin: Path, dest: Path) -> Path:
    """The parts of the repository the tests need (not .venv, not .git)."""
    dest.mkdir(parents=True)
    for name in COPIED:
        source = origin / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=IGNORED)
        else:
            shutil.copy2(source, dest / name)
    return dest


def check_edits(copy: Path, mutation: Mutation, write: bool) -> str | None:
    """Apply the mutation's edits to `copy` (or only check them, write=False); the reason
    it cannot be applied, else None."""
    texts: dict[Path, str] = {}
    for edit in mutation.edits:
        path = copy / "mysqlgate" / edit.file
        if not path.is_file():
            return f"{STALE}: mysqlgate/{edit.file} does not exist"
        text = texts.get(path)
        if text is None:
            text = path.read_text()
        count = text.count(edit.original)
        first_line = edit.original.strip().splitlines()[0] if edit.original.strip() else ""
        if count == 0:
            return f"{STALE}: snippet not found in mysqlgate/{edit.file}: {first_line!r}"
        if count > 1:
            return f"{STALE}: snippet occurs {count} times in mysqlgate/{edit.file}: {first_line!r}"
        if edit.replacement == edit.original:
            return f"{BROKEN}: the replacement equals the original in mysqlgate/{edit.file}"
        texts[path] = text.replace(edit.original, edit.replacement, 1)
    for path, text in texts.items():
        if path.suffix == ".py":
            try:
                compile(text, str(path), "exec")
            except SyntaxError as exc:
                return f"{BROKEN}: the mutated {path.name} does not compile: {exc}"
        if write:
            path.write_text(text)
    if any(path.suffix == ".c" for path in texts):
        # C is checked by building it, which needs the edit written; --check (write=False)
        # only finds the snippets.
        return build_extension(copy, texts) if write else None
    return None


def build_extension(copy: Path, texts: dict[Path, str]) -> str | None:
    """Rebuild the copy's compiled extension in place from its (mutated) C source; the
    tests run against the copy, whose old .so would otherwise hide the mutation."""
    # The extension is optional to setuptools: a failed build leaves no error, only no
    # library, so the old one goes first and a new one must appear.
    for old in (copy / "mysqlgate").rglob("*.so"):
        old.unlink()
    built = subprocess.run(
        [str(PYTHON), "setup.py", "--quiet", "build_ext", "--inplace", "--force"],
        cwd=copy, capture_output=True, text=True, timeout=300, check=False,
    )
    if built.returncode != 0 or not any((copy / "mysqlgate").rglob("*.so")):
        names = ", ".join(path.name for path in texts if path.suffix == ".c")
        return f"{BROKEN}: the mutated {names} does not build: {built.stderr[-2000:]}"
    return None


def test_env(copy: Path) -> dict[str, str]:
    """The copy first on sys.path (the venv's editable install points at the original)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(copy), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_gate_runs_the_copy(copy: Path) -> str:
    """The gates the tests start must run the copy's mysqlgate, or every mutation would be
    "not caught". They run the harness's DEFAULT_COMMAND (`python -m mysqlgate`) with
    cwd = the harness's REPO_ROOT; `-m` puts the cwd first on sys.path, ahead of the venv's
    editable install of the original. Proven here with a marker in the copy's __main__.py."""
    env = test_env(copy)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "tests"), env["PYTHONPATH"]])
    found = subprocess.run(
        [str(PYTHON), "-c", "import json, harness.gate as g; "
         "print(json.dumps([list(g.DEFAULT_COMMAND), str(g.REPO_ROOT)]))"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    if found.returncode != 0:
        raise RuntimeError(f"cannot import the copy's harness: {found.stderr.strip()}")
    command, repo_root = json.loads(found.stdout.strip().splitlines()[-1])
    if Path(repo_root).resolve() != copy.resolve():
        raise RuntimeError(f"the copy's harness starts gates in {repo_root}, not in {copy}")
    main = copy / "mysqlgate" / "__main__.py"
    original = main.read_text()
    main.write_text(
        "import sys as _s\n"
        f"print({PROBE_MARK!r}, __file__, _s.modules['mysqlgate'].__file__, file=_s.stderr)\n"
        + original
    )
    try:
        probe = subprocess.run(
            [*command, "--version"], cwd=repo_root, env=test_env(copy),
            capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        main.write_text(original)
    marks = [line for line in probe.stderr.splitlines() if line.startswith(PROBE_MARK)]
    if not marks:
        raise RuntimeError(
            f"`{' '.join(command)}` in {repo_root} did not run the copy's __main__.py "
            f"(no marker): stdout {probe.stdout!r}, stderr {probe.stderr[-2000:]!r}")
    files = marks[0].split()[1:]
    outside = [f for f in files if not Path(f).resolve().is_relative_to(copy.resolve())]
    if outside:
        raise RuntimeError(f"the gate imported mysqlgate from outside the copy: {outside}")
    return f"`{' '.join(command)}` (cwd = the copy) runs {files[1]}"


# -- pytest ---------------------------------------------------------------------------------------


def collect(copy: Path, args: Sequence[str]) -> list[str]:
    """Node ids pytest collects for `args` in the copy (no test runs)."""
    result = subprocess.run(
        [str(PYTHON), "-m", "pytest", "--collect-only", *PYTEST_FLAGS, *args],
        cwd=copy, env=test_env(copy), capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(
            f"pytest --collect-only {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return [line.strip() for line in result.stdout.splitlines() if "::" in line]


def resolve(copy: Path, all_ids: list[str], selectors: Iterable[Selector],
            k_cache: dict[K, list[str]]) -> tuple[list[str], list[str]]:
    """(node ids in selector order without duplicates, selectors that select nothing)."""
    ids: dict[str, None] = {}
    missing: list[str] = []
    for selector in selectors:
        if isinstance(selector, K):
            if selector not in k_cache:
                k_cache[selector] = collect(copy, [selector.path, "-k", selector.expr])
            matched = k_cache[selector]
            label = f"{selector.path} -k {selector.expr!r}"
        else:
            matched = [node for node in all_ids if _selects(selector.rstrip("/"), node)]
            label = selector
        if not matched:
            missing.append(label)
        ids.update(dict.fromkeys(matched))
    return list(ids), missing


# The server flavours every server test runs on: its node ids carry one first among
# their parameters ([mariadb-...], [mysql-...]).
FLAVOURS = ("mariadb", "mysql")


def _selects(selector: str, node: str) -> bool:
    """Whether `selector` (a path, a test, or a test with its parameters, which may
    leave out the flavour: `test_x[close-role]` selects `test_x[mysql-close-role]`)
    selects the collected node id `node`."""
    if node == selector or node.startswith((selector + "::", selector + "[", selector + "/")):
        return True
    base, bracket, params = selector.partition("[")
    if not bracket or not node.startswith(base + "["):
        return False
    flavour, _, rest = node[len(base) + 1:].partition("-")
    return flavour in FLAVOURS and rest == params


def _descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (pytest then tears down its servers and gates), later SIGKILL for pytest
    and whatever it started, by pid."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(INTERRUPT_GRACE)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in [*reversed(_descendants(process.pid)), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's junit XML gives the test `node_id`."""
    parts = node_id.split("::")
    classname = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([classname, *parts[1:-1]]), parts[-1]


def run_pytest(copy: Path, ids: list[str], log: Path, timeout: float,
               stop_first: bool) -> PytestRun:
    junit = log.with_suffix(".xml")
    argv = [str(PYTHON), "-m", "pytest", *PYTEST_FLAGS, f"--junitxml={junit}",
            *(["-x"] if stop_first else []), *ids]
    started = time.monotonic()
    with open(log, "wb") as out:
        out.write(f"### cwd {copy}\n### {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, cwd=copy, env=test_env(copy), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            returncode: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            returncode = None
    run = PytestRun(returncode, time.monotonic() - started)
    if junit.is_file():
        by_key = {_junit_key(node): node for node in ids}
        failed: dict[str, None] = {}
        names: set[str] = set()
        try:
            cases = list(ET.parse(junit).getroot().iter("testcase"))
        except ET.ParseError:  # pytest was killed while writing it
            cases = []
        for case in cases:
            key = (case.get("classname", ""), case.get("name", ""))
            node = by_key.get(key, "::".join(key))
            names.add(node)
            if case.find("failure") is not None or case.find("error") is not None:
                failed[node] = None
        run.ran = len(names)
        run.failed = list(failed)
    return run


# -- one mutation ---------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def judge(result: Result, snapshot: Path, workdir: Path, timeout: float, keep: bool) -> Result:
    """Apply the mutation to a fresh copy of the snapshot and run its tests."""
    mutation = result.mutation
    copy = make_copy(snapshot, workdir / _slug(mutation.name))
    try:
        problem = check_edits(copy, mutation, write=True)
        if problem is not None:
            result.verdict, result.detail = problem.split(":", 1)[0], problem
            return result
        ids = [node for node in result.selected if node not in result.excluded]
        result.log = workdir / "logs" / f"{_slug(mutation.name)}.log"
        run = run_pytest(copy, ids, result.log, timeout, stop_first=True)
        result.run = run
        if run.returncode is None:
            result.verdict = TIMEOUT
            result.detail = f"still running after {timeout:g} s (pytest was stopped)"
        elif run.returncode == 1 and run.failed:
            result.verdict = CAUGHT
        elif run.returncode == 0:
            result.verdict = NOT_CAUGHT
        else:
            result.verdict = ERROR
            result.detail = f"pytest exited with {run.returncode} (see {result.log})"
        return result
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)


# -- output ---------------------------------------------------------------------------------------


def short(node: str) -> str:
    return node.removeprefix("tests/integration/").removeprefix("tests/")


def print_table(results: list[Result]) -> None:
    header = ("mutation", "guarantee", "tests run", "failed", "caught", "seconds",
              "first failure")
    rows = []
    for result in results:
        run = result.run
        selected = len(result.selected) - len(result.excluded)
        rows.append((
            result.mutation.name,
            result.mutation.guarantee,
            f"{run.ran}/{selected}" if run else f"-/{selected}",
            str(len(run.failed)) if run else "-",
            result.verdict,
            f"{run.seconds:.0f}" if run else "-",
            short(run.failed[0]) if run and run.failed else "",
        ))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    line = " | ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*header).rstrip())
    print("-|-".join("-" * width for width in widths))
    for row in rows:
        print(line.format(*row).rstrip())


def print_list() -> None:
    for mutation in MUTATIONS:
        files = ", ".join(sorted({f"mysqlgate/{edit.file}" for edit in mutation.edits}))
        print(f"{mutation.name}\n    breaks: {mutation.guarantee}\n    edits:  {files}")
        for selector in mutation.tests:
            text = f"{selector.path} -k {selector.expr!r}" if isinstance(selector, K) \
                else selector
            print(f"    test:   {text}")


def select(only: list[str] | None) -> list[Mutation]:
    """The mutations --only names: an exact name, else every name containing the text."""
    if not only:
        return list(MUTATIONS)
    chosen: dict[str, Mutation] = {}
    for wanted in only:
        exact = [m for m in MUTATIONS if m.name == wanted]
        matches = exact or [m for m in MUTATIONS if wanted.lower() in m.name.lower()]
        if not matches:
            names = "\n  ".join(m.name for m in MUTATIONS)
            raise SystemExit(f"no mutation named {wanted!r}; there are:\n  {names}")
        chosen.update((m.name, m) for m in matches)
    return [m for m in MUTATIONS if m.name in chosen]


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run these mutations (exact name or a part of names)")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every snippet and test selection still matches")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutations run at once (timing-sensitive tests prefer 1)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds per mutation before its pytest is stopped")
    parser.add_argument("--baseline-timeout", type=float, default=1800)
    parser.add_argument("--skip-baseline", action="store_true",
                        help="no baseline run (while editing one entry; proves less)")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies")
    args = parser.parse_args(argv)

    if args.list:
        print_list()
        return 0
    mutations = select(args.only)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mysqlgate-mutations-"))
    (workdir / "logs").mkdir()
    # One snapshot of the working tree for the baseline and every mutation: others may
    # edit the repository while this runs.
    snapshot = make_copy(ROOT, workdir / "snapshot")
    baseline = make_copy(snapshot, workdir / "baseline")
    if not args.check:
        print(f"work dir and logs: {workdir}")
        print(f"gate check: {check_gate_runs_the_copy(baseline)}")
    all_ids = collect(baseline, ["tests"])
    k_cache: dict[K, list[str]] = {}
    results: list[Result] = []
    for mutation in mutations:
        result = Result(mutation, verdict="")
        problem = check_edits(baseline, mutation, write=False)
        result.selected, missing = resolve(baseline, all_ids, mutation.tests, k_cache)
        if problem is not None:
            result.verdict, result.detail = problem.split(":", 1)[0], problem
        elif missing:
            result.verdict = STALE
            result.detail = "STALE: tests not found: " + "; ".join(missing)
        results.append(result)

    baseline_failed: list[str] = []
    baseline_ok = True
    baseline_said = "passed"
    to_run = [r for r in results if not r.verdict]
    if args.check:
        shutil.rmtree(workdir, ignore_errors=True)
        for result in results:
            result.verdict = result.verdict or "ok"
            print(f"{result.verdict:<6} {result.mutation.name}  ({len(result.selected)} tests)"
                  + (f"\n       {result.detail}" if result.detail else ""))
        return 0 if all(r.verdict == "ok" for r in results) else 1

    union = list(dict.fromkeys(node for r in to_run for node in r.selected))
    if args.skip_baseline:
        baseline_said = "skipped"
        print("baseline: skipped (--skip-baseline)")
    elif union:
        print(f"baseline: {len(union)} tests on the unmutated copy ...", flush=True)
        run = run_pytest(baseline, union, workdir / "logs" / "baseline.log",
                         args.baseline_timeout, stop_first=False)
        baseline_failed = run.failed
        if run.returncode not in (0, 1) or (run.returncode == 1 and not run.failed):
            baseline_ok = False
            baseline_said = "FAILED"
            print(f"baseline: pytest exited with {run.returncode} after {run.seconds:.0f} s; "
                  f"see {workdir / 'logs' / 'baseline.log'}")
            for result in to_run:
                result.verdict, result.detail = ERROR, "the baseline run did not finish"
            to_run = []
        else:
            baseline_ok = not baseline_failed
            baseline_said = "passed" if baseline_ok else "FAILED"
            print(f"baseline: {run.ran} ran, {len(baseline_failed)} failed, "
                  f"{run.seconds:.0f} s")
            for node in baseline_failed:
                print(f"  FAILS UNMUTATED: {node}")
    if not args.keep:
        shutil.rmtree(baseline, ignore_errors=True)

    for result in to_run:
        result.excluded = [node for node in result.selected if node in baseline_failed]
        if len(result.excluded) == len(result.selected):
            result.verdict = NO_VALID_TEST
            result.detail = "every selected test fails on the unmutated code"
    to_run = [r for r in to_run if not r.verdict]

    lock = threading.Lock()

    def one(result: Result) -> Result:
        judge(result, snapshot, workdir, args.timeout, args.keep)
        run = result.run
        with lock:
            print(f"  {result.verdict:<7} {result.mutation.name}"
                  + (f" ({run.seconds:.0f} s)" if run else "")
                  + (f": {short(run.failed[0])}" if run and run.failed else ""), flush=True)
        return result

    print(f"mutations: {len(to_run)} to run, {max(1, args.jobs)} at a time", flush=True)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(one, to_run))
    if not args.keep:
        shutil.rmtree(snapshot, ignore_errors=True)

    print()
    print_table(results)
    print()
    for result in results:
        if result.verdict != CAUGHT:
            print(f"{result.verdict}: {result.mutation.name}"
                  + (f" - {result.detail}" if result.detail else ""))
        elif result.run and result.run.failed[0].startswith("tests/unit/"):
            print(f"caught by a unit test only: {result.mutation.name} - no integration test "
                  "in its selection failed")
        if result.excluded:
            print(f"  ({result.mutation.name}: {len(result.excluded)} selected tests fail "
                  "unmutated and were left out: "
                  + ", ".join(short(node) for node in result.excluded) + ")")
    caught = sum(r.verdict == CAUGHT for r in results)
    print(f"\n{caught} of {len(results)} mutations caught; baseline {baseline_said}; "
          f"{time.monotonic() - started:.0f} s in all; logs in {workdir / 'logs'}")
    return 0 if baseline_ok and caught == len(results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # the copy cannot be collected or run at all
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
