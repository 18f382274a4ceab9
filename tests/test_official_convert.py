"""scripts/convert_official_checkpoint.py: official .pth → save_pretrained folder that
reproduces the official output; bad input is one clear line."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.archs.nafnet_arch import NAFNet_arch
from utils.errors import run_cli

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "convert_official_checkpoint.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def run_in_process(monkeypatch, capsys, *args):
    """The CLI's ``run_cli(main)`` in this process (cheaper than a subprocess): (exit code, stderr)."""
    spec = importlib.util.spec_from_file_location("convert_official_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main)
    return exit_info.value.code, capsys.readouterr().err


def test_convert_nafnet(fixtures_dir, tmp_path, monkeypatch, capsys):
    tensors = load_file(str(fixtures_dir / "nafnet_official_w8.safetensors"))
    meta = json.loads((fixtures_dir / "nafnet_official_w8.json").read_text())
    state = {k.removeprefix("state_dict."): v for k, v in tensors.items() if k.startswith("state_dict.")}
    torch.save({"params": state}, tmp_path / "official.pth")
    kw = meta["constructor_kwargs"]
    options = [f"width={kw['width']}", f"middle_blk_num={kw['middle_blk_num']}",
               f"enc_blk_nums={kw['enc_blk_nums']}".replace(" ", ""), f"dec_blk_nums={kw['dec_blk_nums']}".replace(" ", "")]
    out = tmp_path / "converted"
    proc = run("--type", "NAFNet", "--checkpoint", tmp_path / "official.pth", "--out", out, *options)
    assert proc.returncode == 0, proc.stderr
    assert "290,715 parameters" in proc.stdout
    mapping = json.loads(proc.stdout.split("network: ", 1)[1])
    assert mapping["type"] == "NAFNet" and mapping["enc_blk_nums"] == [1, 1, 1, 1]
    net = NAFNet_arch.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(tensors["input"]), tensors["output"], atol=1e-5, rtol=0)
    assert not (tmp_path / "converted.tmp").exists()

    # Existing output, a wrong architecture and an unknown keyword: one line, exit 2, nothing written.
    for args, message in (
        ((*options,), "exists"),
        (("--overwrite", "width=16"), "does not match"),
        (("--overwrite", "widht=8"), "did you mean option.width"),
    ):
        code, err = run_in_process(monkeypatch, capsys, "--type", "NAFNet", "--checkpoint", tmp_path / "official.pth",
                                   "--out", out, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (out / "model.safetensors").is_file()  # the earlier result survived the failures
    code, err = run_in_process(monkeypatch, capsys, "--type", "UNet", "--checkpoint", tmp_path / "official.pth",
                               "--out", tmp_path / "u")
    assert code == 2 and "no official checkpoint loader" in err and not (tmp_path / "u").exists()
