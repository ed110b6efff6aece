"""Safety: a local Ray listens on the loopback only and a dead cluster address fails in bounded time;
`selftrain run --force` replaces only run folders, after every input is checked; a failed start
leaves nothing behind; YAML alias bombs and corrupt run records are one-line errors.

Every CLI failure here: exit status 2, exactly one line on stderr naming the file or flag, no
traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mcts.config import SearchConfig
from selftrain.config import ConfigError, RunConfig, load_config
from selftrain.run import RunContext, is_run_folder
from treesearch.engine import EngineSpec

SPEC = EngineSpec(model="scripted", prm="oracle", seed=3, config=SearchConfig(simulations=4, width=2))
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def one_error_line(capsys) -> str:
    """The CLI's only stderr line (asserting there is exactly one and no traceback)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# Ray: what listens, and a cluster that is not there


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6} (little-endian 32-bit words in hex) as text."""
    raw = bytes.fromhex(text)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    return socket.inet_ntop(socket.AF_INET6, raw)


def _proc_listeners(pids: set[int]) -> dict[int, list[str]] | None:
    """pid -> the local addresses of its listening TCP sockets, from /proc; None when unreadable."""
    inodes: dict[str, str] = {}  # socket inode -> local address of a LISTEN socket
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    inodes[fields[9]] = _hex_address(fields[1].split(":")[0])
    except OSError:
        return None
    if not inodes:
        return None
    out: dict[int, list[str]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError:
            return None
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                out.setdefault(pid, []).append(inodes[target[8:-1]])
    return out


def _ss_listeners(pids: set[int]) -> dict[int, list[str]] | None:
    """The same from `ss -ltnpH`; None without ss."""
    if shutil.which("ss") is None:
        return None
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout
    out: dict[int, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        local = fields[3].rsplit(":", 1)[0].strip("[]")
        for pid in pids:
            if f"pid={pid}," in fields[5]:
                out.setdefault(pid, []).append(local)
    return out


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def test_a_local_ray_started_by_the_executor_listens_on_the_loopback_only():
    ray = pytest.importorskip("ray")
    from treesearch.executor import RayExecutor

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc to find the processes of Ray")
    executor = RayExecutor(actors=1)
    try:
        executor.start(SPEC)  # Ray's servers, the driver and an actor (a worker) are all up
        pids = {os.getpid(), *_descendants(os.getpid())}
        listeners = _proc_listeners(pids)
        if listeners is None:
            listeners = _ss_listeners(pids)
        if listeners is None:
            pytest.skip("neither /proc/net/tcp nor ss can list listening sockets")
        names = {_comm(pid) for pid in listeners}
        assert {"gcs_server", "raylet"} <= names, listeners  # the check sees Ray's servers
        assert os.getpid() in listeners  # and the driver's own server
        assert len(listeners) >= 4, listeners  # gcs, raylet, driver, at least one worker
        exposed = {(_comm(pid), address) for pid, addresses in listeners.items() for address in addresses
                   if address not in LOOPBACK}
        assert not exposed, f"Ray sockets listening beyond the loopback: {sorted(exposed)}"
        assert ray.util.get_node_ip_address() == "127.0.0.1"
    finally:
        executor.close()
    assert not ray.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_nothing_listens_fails_within_the_bound():
    ray = pytest.importorskip("ray")
    from treesearch.engine import make_shards
    from treesearch.executor import ExecutorError, RayExecutor
    from mcts.envs.arith import generate_problems
    from mcts.problems import Problem

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    address = f"127.0.0.1:{_free_port()}"
    problems = [Problem(id=r["id"], problem=r["problem"], answer=str(r["answer"]), source="jsonl")
                for r in generate_problems(2, 0)]
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=f"no Ray cluster at {address}.*within 2 s"):
        RayExecutor(address=address, connect_timeout=2).run(SPEC, make_shards(problems, 2), print)
    assert time.monotonic() - started < 10
    assert not ray.is_initialized()
    with pytest.raises(ValueError, match="connect_timeout"):
        RayExecutor(connect_timeout=0)


def test_the_search_cli_names_a_ray_address_where_nothing_listens(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    import treesearch.executor
    from treesearch.cli import main

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    from mcts.envs.arith import generate_problems, write_problems

    problems = write_problems(tmp_path / "toy.jsonl", generate_problems(2, seed=5))
    monkeypatch.setattr(treesearch.executor, "CONNECT_TIMEOUT_S", 1.0)
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    assert main(["--problem-file", str(problems), "--out", str(tmp_path / "r.jsonl"), "--model", "scripted",
                 "--prm", "oracle", "--simulations", "4", "--executor", "ray", "--ray-address", address]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err  # (the search's progress bar is drawn before the executor connects)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "--executor ray" in errors[0] and f"no Ray cluster at {address}" in errors[0]
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------------------------------
# selftrain run --force, and failed starts


def _args(runs: Path, name: str, *more: str) -> list[str]:
    return ["run", "--runs-dir", str(runs), "--name", name, "--iterations", "0", "--train-problems", "4",
            "--eval-problems", "4", "--no-progress", "--set", "eval_search_problems=0", *more]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _real_run(runs: Path, name: str = "real", **fields) -> Path:
    """A run folder as a run leaves it: config.json, a recorded stage and what it wrote."""
    config = RunConfig(runs_dir=str(runs), name=name, iterations=0, train_problems=4, eval_problems=4,
                       eval_search_problems=0, **fields)
    ctx = RunContext(config, progress=False)

    def work(folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.bin").write_bytes(b"trained for hours")
        return {"policy": str(folder), "prm": str(folder)}

    ctx.stage(0, "base", work)
    ctx.close()  # a stage is recorded: nothing is removed
    assert is_run_folder(config.folder)
    return config.folder


def test_force_refuses_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    from selftrain.cli import main

    runs = tmp_path / "runs"
    precious = runs / "victim" / "precious" / "data.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("irreplaceable")
    # the issue's command: a bad --policy too; and a good one
    for more in (["--policy", str(tmp_path / "nonexistent")], []):
        assert main(_args(runs, "victim", "--force", *more)) == 2
        line = one_error_line(capsys)
        assert precious.read_text() == "irreplaceable" and sorted(os.listdir(runs / "victim")) == ["precious"]
        assert ("--policy" in line) if more else ("victim exists and is not a selftrain run folder" in line
                                                  and "--force replaces only run folders" in line)
    # a model folder (its config.json is not a run's), a run folder holding a file a run does not write
    model = runs / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"fingerprint": "0", "config": {"hidden_size": 8}}))
    (model / "model.safetensors").write_bytes(b"weights")
    real = _real_run(runs)
    (real / "notes.txt").write_text("mine")
    for name, why in (("model", "its config.json is not a run's"), ("real", "notes.txt")):
        before = _snapshot(runs / name)
        assert main(_args(runs, name, "--force", "--seed", "7")) == 2
        line = one_error_line(capsys)
        assert why in line and str(runs / name) in line
        assert _snapshot(runs / name) == before


def test_a_bad_input_with_force_leaves_a_real_run_folder_untouched(tmp_path, capsys):
    from selftrain.cli import main

    runs = tmp_path / "runs"
    real = _real_run(runs)
    before = _snapshot(real)
    missing = str(tmp_path / "nonexistent")
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    for more, flag in ((["--policy", missing], "--policy"), (["--policy", str(not_a_model)], "config.json"),
                       (["--prm", missing], "--prm"), (["--train-file", missing], missing),
                       (["--eval-file", missing], missing)):
        assert main(_args(runs, "real", "--force", "--seed", "7", *more)) == 2, more
        assert flag in one_error_line(capsys)
        assert _snapshot(real) == before
    # the same folder is replaced by --force once every input is good (and refused without it)
    with pytest.raises(Exception, match="another configuration"):
        RunContext(RunConfig(runs_dir=str(runs), name="real", iterations=0, train_problems=4, eval_problems=4,
                             eval_search_problems=0, seed=7))
    ctx = RunContext(RunConfig(runs_dir=str(runs), name="real", iterations=0, train_problems=4, eval_problems=4,
                               eval_search_problems=0, seed=7), force=True)
    assert sorted(os.listdir(real)) == ["config.json"]
    ctx.close()  # no stage of the new run recorded: the failed start leaves nothing
    assert not real.exists() and runs.is_dir()


def test_a_failed_first_start_leaves_nothing_and_the_corrected_retry_starts(tmp_path, capsys, monkeypatch):
    import selftrain.loops
    from selftrain.cli import main
    from selftrain.run import RunError

    runs = tmp_path / "runs"
    # a bad input: nothing is written at all (not even runs/)
    assert main(_args(runs, "first", "--policy", str(tmp_path / "nonexistent"))) == 2
    assert "--policy" in one_error_line(capsys)
    assert not runs.exists()

    # a start that fails in its first stage: the folder it made (and runs/) goes again
    def failing_base(ctx):
        assert (ctx.folder / "config.json").exists()
        (ctx.folder / "iter_0" / "base").mkdir(parents=True)  # half a stage
        raise RunError("the base models cannot be built")

    monkeypatch.setattr(selftrain.loops, "build_base", failing_base)
    assert main(_args(runs, "first", "--seed", "1")) == 2
    assert "cannot be built" in one_error_line(capsys)
    assert not runs.exists()

    # the corrected retry (another configuration) is not refused as "another configuration"
    seen = []

    def recording_base(ctx):
        seen.append(json.loads((ctx.folder / "config.json").read_text())["config"]["seed"])
        ctx.stage(0, "base", lambda folder: {"policy": "p", "prm": "q"})
        raise RunError("stop after the base")

    monkeypatch.setattr(selftrain.loops, "build_base", recording_base)
    assert main(_args(runs, "first", "--seed", "2")) == 2
    assert "stop after the base" in one_error_line(capsys)
    assert seen == [2]
    assert (runs / "first" / "iter_0" / "stages.json").exists()  # a recorded stage stays: the run resumes

    # an existing empty folder: kept, and left empty
    (runs / "empty").mkdir()
    monkeypatch.setattr(selftrain.loops, "build_base", failing_base)
    assert main(_args(runs, "empty")) == 2
    one_error_line(capsys)
    assert (runs / "empty").is_dir() and not os.listdir(runs / "empty")


def test_a_corrupt_run_record_is_one_line_naming_the_file(tmp_path, capsys):
    from selftrain.cli import main

    runs = tmp_path / "runs"
    real = _real_run(runs)
    saved = real / "config.json"
    text = saved.read_text()
    saved.write_text(text[: len(text) // 2])  # truncated
    before = _snapshot(real)
    for more in ([], ["--force", "--seed", "7"]):
        assert main(_args(runs, "real", *more)) == 2
        line = one_error_line(capsys)
        assert str(saved) in line and "unreadable run configuration" in line
        assert _snapshot(real) == before  # not even --force deletes a folder it cannot recognise
    saved.write_text(text)
    stages = real / "iter_0" / "stages.json"
    stages.write_text("{\"base\": {\"policy\": ")
    assert main(_args(runs, "real")) == 2
    assert str(stages) in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------------
# Bounded YAML

LAUGHS = "\n".join(['lol1: &lol1 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(2, 10)]) + "\n"
LAUGHS_MAP = "\n".join(["l1: &l1 {" + ", ".join(f"k{j}: lol" for j in range(9)) + "}"] + [
    f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(9)) + "}" for i in range(2, 10)]) + "\n"


@pytest.mark.parametrize("document", [LAUGHS, LAUGHS_MAP, "sft: &x {lora: true, loop: *x}\n"],
                         ids=["billion-laughs", "billion-laughs-mappings", "recursive"])
def test_a_yaml_alias_bomb_is_refused_quickly_by_the_cli(tmp_path, capsys, document):
    from selftrain.cli import main

    path = tmp_path / "bomb.yaml"
    path.write_text(f"runs_dir: {tmp_path / 'runs'}\n" + document)
    started = time.monotonic()
    assert main(["run", "--config", str(path)]) == 2
    assert time.monotonic() - started < 1.0
    line = one_error_line(capsys)
    assert line.startswith(f"error: {path}: refused: ") and "alias" in line
    assert not (tmp_path / "runs").exists()


def test_bounded_yaml_still_reads_anchors_and_refuses_huge_files(tmp_path, monkeypatch):
    import selftrain.config

    path = tmp_path / "run.yaml"
    path.write_text("search: &s {simulations: 8, width: 2}\nsft:\n  lora_targets: &t [q_proj, v_proj]\n"
                    "prm_train:\n  epochs: 1.0\n")
    config = load_config(path)
    assert config.search.simulations == 8 and config.sft.lora_targets == ("q_proj", "v_proj")
    with pytest.raises(ConfigError, match=r"refused: .*alias"):
        load_config(None, sets=["sft.lora_targets=[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
            f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)) + "]"])
    monkeypatch.setattr(selftrain.config, "MAX_YAML_BYTES", 64)
    path.write_text("name: a\n" * 20)
    with pytest.raises(ConfigError, match=rf"{path.name}: refused: larger than 64 bytes"):
        load_config(path)
