"""Step 4 (push to the Hub): one clear line when offline / not logged in / unreachable, token never shown."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.errors import ConfigError, DataError

SCRIPT = Path(__file__).resolve().parent.parent / "data_gen" / "4.push_dataset_to_hf.py"
TOKEN = "hf_notARealToken0123456789abcdef"


def load_script():
    spec = importlib.util.spec_from_file_location("push_dataset_to_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def folder(tmp_path):
    """The shape of a finished step-3 folder (contents are not inspected by step 4)."""
    (tmp_path / "ds" / "data").mkdir(parents=True)
    (tmp_path / "ds" / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    (tmp_path / "ds" / "data" / ".train-00001-of-00002.parquet.x.tmp").write_bytes(b"partial")
    (tmp_path / "ds" / "README.md").write_text("---\n---\n")
    return tmp_path / "ds"


def push(folder, tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    base.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0"})  # HF_HOME: no saved login
    base.update(env)
    return subprocess.run([sys.executable, str(SCRIPT), "--path", str(folder), "--repo_id", "someone/blur"],
                          capture_output=True, text=True, env=base, timeout=120)


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    return lines[0]


def test_offline(folder, tmp_path):
    assert "offline mode is on" in one_line(push(folder, tmp_path, HF_HUB_OFFLINE="1", HF_TOKEN=TOKEN))


def test_not_logged_in(folder, tmp_path):
    assert "not logged in to the Hugging Face Hub" in one_line(push(folder, tmp_path, HF_ENDPOINT="http://127.0.0.1:9"))


def test_unreachable_hub_never_shows_the_token(folder, tmp_path):
    line = one_line(push(folder, tmp_path, HF_TOKEN=TOKEN, HF_ENDPOINT="http://127.0.0.1:9"))
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in line


def test_bad_folder_and_repo_id(tmp_path):
    step4 = load_script()
    with pytest.raises(DataError, match="dataset folder not found"):
        step4.main(["--path", str(tmp_path / "nope"), "--repo_id", "a/b"])
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="is not a finished dataset folder"):
        step4.main(["--path", str(tmp_path / "half"), "--repo_id", "a/b"])
    with pytest.raises(ConfigError, match="--repo_id must look like USER/NAME"):
        step4.main(["--path", str(tmp_path / "half"), "--repo_id", "just-a-name"])


def test_upload_calls(folder, monkeypatch):
    """The Hub calls made when everything is in place (a stand-in for the network)."""
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token):
            calls["token"] = token

        def whoami(self):
            return {"name": "someone"}

        def create_repo(self, repo_id, **kw):
            calls["create_repo"] = (repo_id, kw)
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kw):
            calls["upload_folder"] = kw

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    step4 = load_script()
    assert step4.main(["--path", str(folder), "--repo_id", "someone/blur", "--private"]) == 0
    assert calls["token"] == TOKEN
    assert calls["create_repo"] == ("someone/blur", {"repo_type": "dataset", "private": True, "exist_ok": True})
    up = calls["upload_folder"]
    assert up["repo_type"] == "dataset" and up["folder_path"] == str(folder) and up["repo_id"] == "someone/blur"
    from fnmatch import fnmatch

    assert any(fnmatch("data/.train-00001-of-00002.parquet.x.tmp", p) for p in up["ignore_patterns"])
    assert not any(fnmatch("data/train-00000-of-00001.parquet", p) for p in up["ignore_patterns"])
