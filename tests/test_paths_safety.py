"""Where the tool reads and writes: output paths stay in the output folder, whatever the input holds.

The cases: a tick file that is a symbolic link to a file elsewhere, and hostile pair names and
symbols such as ``../x``, ``EUR/USD`` or an absolute path. Temporary files must not follow a
link planted at their name. A scan of the source finds no pickle, eval, exec or shell subprocess.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fxresearch import artifacts, naming
from fxresearch.config import SampleConfig
from fxresearch.sample import write_sample_set

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_FILES = sorted((REPO_ROOT / "fxresearch").rglob("*.py")) + [REPO_ROOT / "main.py", REPO_ROOT / "vast_mode.py"]

HOSTILE_PAIR_NAMES = ["../x", "EUR/USD", "EURUSD_2025/../../x", "/tmp/EURUSD_2025", "..", ".", ""]


def _tree_state(root: Path, skip: Path) -> dict[str, tuple[int, int, str]]:
    """Return path -> (size, mtime_ns, link target or '') for everything under ``root`` outside ``skip``."""
    state = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            target = os.readlink(path) if path.is_symlink() else ""
            state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, target)
    return state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def elsewhere_ticks(tmp_path_factory) -> Path:
    """A small synthetic EURUSD tick file under a name that does not follow PAIR_YEAR.parquet."""
    folder = tmp_path_factory.mktemp("elsewhere")
    written = write_sample_set(folder, SampleConfig(weeks=2, pairs=("EURUSD",), ticks_per_hour=600))[0]
    target = folder / "vendor_ticks.parquet"
    written.rename(target)
    return target


def _env_with_absolute_numba_cache() -> dict[str, str]:
    """Return the environment with NUMBA_CACHE_DIR made absolute, so the CLI run in tmp_path keeps it there."""
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(Path(env.get("NUMBA_CACHE_DIR", REPO_ROOT / ".numba_cache")).resolve())
    return env


def test_symlinked_tick_file_writes_only_under_output(elsewhere_ticks, tmp_path):
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    link = input_dir / "EURUSD_2025.parquet"
    link.symlink_to(elsewhere_ticks)
    output_dir = tmp_path / "out"
    target_dir = elsewhere_ticks.parent
    target_hash = _sha256(elsewhere_ticks)
    before_target = _tree_state(target_dir, skip=target_dir / "none")
    before_work = _tree_state(tmp_path, skip=output_dir)

    # The CLI runs in tmp_path, so a write to a relative path outside --output-dir shows up too.
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), "--vast-mode", "--generate-base",
         "--input-dir", str(input_dir), "--output-dir", str(output_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env_with_absolute_numba_cache(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # The tool read the link: the pair is named by the link, and its bars exist in the output folder.
    assert (output_dir / "EURUSD_2025" / "bars" / "M1.parquet").is_file()
    assert (output_dir / "EURUSD_2025" / "manifest.json").is_file()
    # Nothing was written beside the link's target, and the target is unchanged.
    assert _tree_state(target_dir, skip=target_dir / "none") == before_target
    assert _sha256(elsewhere_ticks) == target_hash
    # Outside the output folder, the work folder is as it was: no new, changed or removed file.
    assert _tree_state(tmp_path, skip=output_dir) == before_work
    # Every file under the output folder is a real file or folder, not a link that leads out.
    links = [path for path in output_dir.rglob("*") if path.is_symlink()]
    assert links == []


@pytest.mark.parametrize("pair_year", HOSTILE_PAIR_NAMES)
def test_pair_dir_rejects_hostile_name(tmp_path, pair_year):
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    with pytest.raises(ValueError, match="inside the output folder"):
        artifacts.pair_dir(output_dir, pair_year)
    # The check runs before mkdir, so no folder was made anywhere.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]


def test_pair_dir_accepts_pair_name(tmp_path):
    path = artifacts.pair_dir(tmp_path / "out", "EURUSD_2025")

    assert path == tmp_path / "out" / "EURUSD_2025"
    assert path.is_dir()


def test_pair_dir_rejects_link_out_of_output(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "EURUSD_2025").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ValueError, match="symbolic link"):
        artifacts.pair_dir(output_dir, "EURUSD_2025")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", [
    "../x",
    "EUR/USD_2025.parquet",
    "EURUSD_2025.parquet/../../x",
    "..",
    "EURUSD_../2025.parquet",
    "EUR.USD_2025.parquet",
    "ÉURUSD_2025.parquet",
    "EURUSD_２０２５.parquet",
])
def test_parse_pair_filename_rejects_hostile_name(name):
    with pytest.raises(naming.InvalidFileNameError, match="Expected PAIR_YEAR.parquet"):
        naming.parse_pair_filename(name)


def test_parse_pair_filename_reads_name_not_folder():
    # Only the last component is parsed, so a folder in the path never reaches the pair id.
    assert naming.parse_pair_filename("../../EURUSD_2025.parquet") == ("EURUSD", 2025)
    assert naming.parse_pair_filename("/data/EUR/USD/GBPJPY_2020.PARQUET") == ("GBPJPY", 2020)


def test_parse_pair_filename_rejects_trailing_newline():
    with pytest.raises(naming.InvalidFileNameError):
        naming.parse_pair_filename("EURUSD_2025.parquet\n")


def test_symbol_from_file_content_never_a_path():
    common = pytest.importorskip("fxresearch.importing.common", reason="the vendor importer is not in this tree")
    if not hasattr(common, "normalise_symbol"):
        pytest.skip("fxresearch.importing.common has no normalise_symbol")

    assert common.normalise_symbol("EUR/USD", "test input")[0] == "EURUSD"
    for raw in ("../x", "../EURUSD", "EUR/../USD", "/etc/passwd", "EURUSD/../../x", ""):
        with pytest.raises(ValueError, match="Invalid symbol"):
            common.normalise_symbol(raw, "test input")


def test_atomic_write_never_follows_planted_temp_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("unchanged")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    target = output_dir / "manifest.json"

    # Fix the random part of the temporary name and plant a link there first.
    class FixedUuid:
        hex = "0" * 32

    monkeypatch.setattr(artifacts.uuid, "uuid4", lambda: FixedUuid())
    artifacts.temp_path_for(target).symlink_to(victim)

    with pytest.raises(OSError, match="Cannot write"):
        artifacts.write_bytes_atomic(target, b"{}")
    assert victim.read_text() == "unchanged"
    assert not target.exists()


def test_atomic_write_replaces_link_not_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("unchanged")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    target = output_dir / "manifest.json"
    target.symlink_to(victim)

    artifacts.write_bytes_atomic(target, b"{}")

    # os.replace swaps the link itself for the new file.
    assert not target.is_symlink()
    assert target.read_bytes() == b"{}"
    assert victim.read_text() == "unchanged"


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


@pytest.mark.parametrize("path", SOURCE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_source_has_no_pickle_eval_exec_or_shell(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    unsafe_modules = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & unsafe_modules == set()

    for call in _calls(tree):
        name = _dotted(call.func)
        # User templates run through importlib's exec_module on purpose; a bare eval or exec never.
        assert name not in {"eval", "exec", "compile", "os.system", "os.popen", "tempfile.mktemp"}, (
            f"{path.name}:{call.lineno} calls {name}"
        )
        assert not name.endswith(("read_pickle", "to_pickle")), f"{path.name}:{call.lineno} calls {name}"
        for keyword in call.keywords:
            is_true = isinstance(keyword.value, ast.Constant) and keyword.value.value is True
            assert not (keyword.arg in {"shell", "allow_pickle"} and is_true), (
                f"{path.name}:{call.lineno} passes {keyword.arg}=True"
            )
