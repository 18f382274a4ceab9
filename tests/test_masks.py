"""utils/masks.py against the official MAT mask generator's fixture (bit-identical masks for
every stored seed, hole-ratio statistics over 500 seeds) and basic checks of the LaMa-style
masks, buckets and fixed mask sets."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from utils import masks

FIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "vae_inpaint"
KINDS = {"mat_256": "mask_generator_256", "mat_512": "mask_generator_512",
         "mat_256_small": "mask_generator_256_small", "mat_512_small": "mask_generator_512_small"}


@pytest.fixture(scope="module")
def fixture():
    if not (FIX / "mat_masks.npz").is_file():
        pytest.skip("shared fixtures not available")
    return np.load(FIX / "mat_masks.npz"), json.loads((FIX / "mat_masks.json").read_text())


@pytest.mark.parametrize("kind", list(KINDS))
def test_mat_masks_bit_identical(fixture, kind):
    arrays, meta = fixture
    name = KINDS[kind]
    ref, seeds = arrays[name], arrays[f"{name}_seeds"]
    shas = meta["generators"][name]["fixture_sha256_per_mask"]
    for i, seed in enumerate(seeds):
        m = masks.mat_mask(kind, int(seed))
        assert m.dtype == np.uint8 and m.shape == ref[i].shape
        assert np.array_equal(m, ref[i]), f"{kind} seed {seed}"
        assert hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest() == shas[i]


def test_mat_mask_global_numpy_state_equals_seeded_state(fixture):
    arrays, _ = fixture
    np.random.seed(3)
    assert np.array_equal(masks.mat_mask("mat_256"), arrays["mask_generator_256"][3])


@pytest.mark.parametrize("kind", list(KINDS))
def test_mat_hole_ratio_statistics_500_seeds(fixture, kind):
    arrays, meta = fixture
    name = KINDS[kind]
    ratios = np.array([masks.hole_ratio(masks.mat_mask(kind, s)) for s in range(500)])
    assert abs(ratios.mean() - meta["generators"][name]["stats_seeds_0_499"]["hole_ratio_mean"]) <= 0.02
    # the port is exact, so every per-seed ratio is too
    assert np.array_equal(ratios, arrays[f"{name}_hole_ratio_seeds0_499"])


def test_hole_range_rejection():
    for s in range(10):
        r = masks.hole_ratio(masks.mat_mask("mat_256_small", s, hole_range=(0.2, 0.5)))
        assert 0.2 < r < 0.5


@pytest.mark.parametrize("kind", masks.LAMA_KINDS)
def test_lama_masks(kind):
    m = masks.lama_mask(kind, 0, (96, 130))
    assert m.shape == (96, 130) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    assert 0.0 < masks.hole_ratio(m) < 0.95
    assert np.array_equal(m, masks.lama_mask(kind, 0, (96, 130)))  # seeded


def test_buckets_and_mask_set(tmp_path):
    assert masks.hole_bucket(0.0) == "0-10%" and masks.hole_bucket(0.1) == "10-20%"
    assert masks.hole_bucket(0.5999) == "50-60%" and masks.hole_bucket(1.0) == "60-100%"
    index = masks.write_mask_set(tmp_path, "mat_256_small", range(3))
    files = masks.read_mask_folder(tmp_path)
    assert [f.name for f in files] == sorted(index)
    for f in files:
        m = masks.read_mask(f)
        assert np.array_equal(m, masks.mat_mask("mat_256_small", index[f.name]["seed"]))
        assert index[f.name]["hole_ratio"] == masks.hole_ratio(m)
