"""Bad input, table-driven, through the real command lines as a user runs them (subprocesses).

Every row must end with exit status 2, exactly one line on stderr that names what is wrong, no
traceback, every file of the working folder unchanged and nothing new written there. Add a row
whenever a new way in is found.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOY = '{"problem": "1 + 2", "answer": 3}\n{"problem": "2 * 3", "answer": 6}\n'
SEARCH = [sys.executable, "-m", "mcts.search"]
FAST = ["--model", "scripted", "--prm", "oracle", "--simulations", "4"]
EVAL = [sys.executable, "-m", "prm.eval"]
SELFTRAIN = [sys.executable, "-m", "selftrain.cli", "run", "--runs-dir", "runs"]
LAUGHS = "\n".join(['lol1: &lol1 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(2, 10)]) + "\n"


def _have_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _remote_code_folder(folder: Path) -> None:
    """A model folder whose config asks transformers to import its own modeling file."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "x", "architectures": ["XModel"],
                                                    "auto_map": {"AutoModelForCausalLM": "modeling_x.XModel"}}))
    (folder / "modeling_x.py").write_text("open('RAN', 'w').write('the folder ran its own code')\n")


# (name, files to create (name -> text, or a callable on the folder), argv, extra environment, what stderr names)
CASES = [
    ("out is the problem file", {"p.jsonl": TOY}, [*SEARCH, "--problem-file", "p.jsonl", "--out", "p.jsonl", *FAST],
     {}, "is the input"),
    ("out is a folder", {"p.jsonl": TOY, "d/keep": ""}, [*SEARCH, "--problem-file", "p.jsonl", "--out", "d", *FAST],
     {}, "is a folder"),
    ("out inside a file", {"p.jsonl": TOY}, [*SEARCH, "--problem-file", "p.jsonl", "--out", "p.jsonl/r.jsonl", *FAST],
     {}, "cannot be written"),
    ("trees-out is a file", {"p.jsonl": TOY, "t": ""},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--trees-out", "t", *FAST], {}, "--trees-out t"),
    ("a rerun over finished results", {"p.jsonl": TOY, "r.jsonl": '{"id": "p:1"}\n'},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {}, "--resume"),
    ("resume and overwrite at once", {"p.jsonl": TOY, "r.jsonl": '{"id": "p:1"}\n'},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--resume", "--overwrite", *FAST], {}, "--overwrite"),
    ("resume a results file that says nothing of its making", {"p.jsonl": TOY, "r.jsonl": '{"id": "p:1"}\n'},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--resume", *FAST], {}, "manifest"),
    ("unknown tree backend", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--tree-backend", "bogus", *FAST], {}, "--tree-backend"),
    ("a tree backend this machine lacks", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--tree-backend", "cuda", *FAST], {}, "not available"),
    ("a CUDA device on a machine without one", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--device", "cuda", *FAST], {}, "--device cuda"),
    ("not a device", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--device", "gpu0", *FAST], {}, "--device gpu0"),
    ("a bad thread count in the environment", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {"TREESEARCH_NUM_THREADS": "abc"},
     "TREESEARCH_NUM_THREADS"),
    ("a problem file that is not UTF-8", {"p.jsonl": b"\xff\xfe{\"problem\": \"1\"}\n"},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {}, "p.jsonl:1"),
    ("deeply nested JSON", {"p.jsonl": '{"problem": ' + "[" * 100000 + "]" * 100000 + "}\n"},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {}, "nested too deeply"),
    ("a toy gold answer in words", {"p.jsonl": '{"problem": "1 + 2", "answer": "seven"}\n'},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {}, "p.jsonl:1: field 'answer'"),
    ("a fractional toy gold answer", {"p.jsonl": TOY + '{"problem": "3 + 4", "answer": 1.5}\n'},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST], {}, "p.jsonl:3: field 'answer'"),
    ("a missing problem file", {}, [*SEARCH, "--problem-file", "nope.jsonl", "--out", "r.jsonl", *FAST], {},
     "nope.jsonl"),
    ("no simulations", {"p.jsonl": TOY},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", *FAST, "--simulations", "0"], {}, "--simulations"),
    ("a model folder that would run its own code", {"p.jsonl": TOY, "model": _remote_code_folder},
     [*SEARCH, "--problem-file", "p.jsonl", "--out", "r.jsonl", "--model", "model", "--prm", "oracle"], {},
     "--trust-remote-code"),
    ("selftrain: --force on a folder it did not write", {"runs/victim/precious/data.txt": "irreplaceable"},
     [*SELFTRAIN, "--name", "victim", "--force", "--policy", "nonexistent"], {}, "--policy"),
    ("selftrain: --force on a folder it did not write, good inputs", {"runs/victim/precious/data.txt": "mine"},
     [*SELFTRAIN, "--name", "victim", "--force"], {}, "is not a selftrain run folder"),
    ("selftrain: a YAML alias bomb", {"bomb.yaml": LAUGHS},
     [sys.executable, "-m", "selftrain.cli", "run", "--config", "bomb.yaml"], {}, "alias"),
    ("selftrain: a corrupt run config", {"runs/r/config.json": '{"fingerprint": "ab'},
     [*SELFTRAIN, "--name", "r"], {}, "config.json"),
    ("selftrain: an unknown config key", {"c.yaml": "runs_dir: runs\nsimulatons: 3\n"},
     [sys.executable, "-m", "selftrain.cli", "run", "--config", "c.yaml"], {}, "c.yaml:2"),
    ("prm.eval: a data file that is not UTF-8", {"d.jsonl": b'{"problem": "1", "steps": ["\xff"], "labels": [1]}\n'},
     [*EVAL, "--prm", "tiny", "--data", "d.jsonl"], {}, "d.jsonl:1"),
    ("prm.eval: deeply nested JSON data", {"d.jsonl": '{"problem": ' + "[" * 100000 + "]" * 100000 + "}\n"},
     [*EVAL, "--prm", "tiny", "--data", "d.jsonl"], {}, "nested too deeply"),
    ("prm.eval: a slip rate above 0.5", {}, [*EVAL, "--prm", "tiny", "--toy", "10", "--slip-rate", "5"], {},
     "--slip-rate"),
    ("prm.eval: no samples", {}, [*EVAL, "--prm", "tiny", "--toy", "10", "--samples", "0"], {}, "--samples"),
    ("prm.eval: negative traces", {}, [*EVAL, "--prm", "tiny", "--toy", "-1"], {}, "--toy"),
    ("prm.eval: negative problems", {}, [*EVAL, "--prm", "tiny", "--best-of-n", "4", "--problems", "-1"], {},
     "--problems"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name, files, argv, env, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, name, files, argv, env, names):
    if name.startswith(("a CUDA device", "a tree backend this machine lacks")) and _have_cuda():
        pytest.skip("this machine has CUDA")
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    before = _snapshot(tmp_path)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    done = subprocess.run(argv, cwd=tmp_path, env=environment, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "[y/N]" not in done.stdout
    assert len(lines) == 1 and names in lines[0], done.stderr
    assert _snapshot(tmp_path) == before  # inputs unchanged, nothing written
