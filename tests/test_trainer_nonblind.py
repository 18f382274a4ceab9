"""Classical (non-trainable) and PSF-aware networks through trainer.py.

A network without trainable parameters (Wiener with a fixed NSR, Richardson–Lucy, FISTA-TV)
is evaluated by ``-test`` as configured, without weights; asking to train it is one clear error.
A PSF-aware network gets its PSF keys from the dataset without any ``psf_keys`` in the YAML.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from utils.errors import ConfigError


def experiment(folder: Path, network: str, max_steps: int = 2) -> Path:
    text = f"""
        name: run
        seed: 0
        network: {network}
        datasets:
          train: &data
            type: SyntheticBlurDataset
            names: [coffee, chelsea]
            psf: {{psf_type: gaussian, grid_shape: [3, 3], psf_size: 11, sensor_res: [48, 48], sigma_px: 0.8,
                   sigma_corner_radial_px: 1.8, sigma_corner_tangential_px: 1.2}}
            linear_light: false
            noise: {{kind: gaussian, sigma: 0.005}}
            crop_size: 32
          val: {{<<: *data, phase: val, crop_size: null}}
          test: {{<<: *data, phase: test, crop_size: null}}
        path: {{root: {folder / 'runs'}}}
        train: {{max_steps: {max_steps}, batch_size: 2, val_every: 0, checkpoint_every: 0, log_every: 1}}
        val: {{metrics: [psnr]}}
        report_to: []
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_classical_networks_run_with_test_and_refuse_training(tmp_path):
    from trainer import main

    scores = {}
    for name, network in (("identity", "{type: RichardsonLucy, iterations: 0}"),
                          ("rl", "{type: RichardsonLucy, iterations: 15}"),
                          ("wiener", "{type: Wiener, mode: regions, nsr: 1.0e-3}")):
        config = experiment(tmp_path / name, network)
        assert main(["-opt", str(config), "-test"]) == 0
        result = json.loads((tmp_path / name / "runs" / "run" / "results" / "test" / "metrics.json").read_text())
        assert sorted(result["per_image"]) == ["chelsea.png", "coffee.png"]
        assert "no trainable parameters" in result["convention"]["weights"]
        scores[name] = result["mean"]["psnr"]
    print(scores)
    # zero iterations returns the blurred input itself: both deconvolutions beat it
    assert scores["rl"] > scores["identity"] + 1.0 and scores["wiener"] > scores["identity"] + 1.0
    with pytest.raises(ConfigError, match="no trainable parameters: nothing to train"):
        main(["-opt", str(experiment(tmp_path / "train", "{type: RichardsonLucy}"))])
    assert not (tmp_path / "train" / "runs").exists()  # refused before the run directory exists


def test_psf_aware_network_trains_without_psf_keys_in_the_yaml(tmp_path):
    from trainer import main

    network = "{type: NAFNetPSF, width: 8, enc_blk_nums: [1], dec_blk_nums: [1], middle_blk_num: 1, cond_dim: 4, psf_size: 11}"
    config = experiment(tmp_path, network, max_steps=3)
    assert main(["-opt", str(config)]) == 0
    run = tmp_path / "runs" / "run"
    assert (run / "last" / "model.safetensors").is_file()
    assert main(["-opt", str(config), "-test"]) == 0
    result = json.loads((run / "results" / "test" / "metrics.json").read_text())
    assert len(result["per_image"]) == 2
