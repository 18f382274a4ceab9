"""Registries: lazy discovery, strict duplicates, helpful unknown-name errors."""
from __future__ import annotations

import sys
import textwrap

import pytest

from utils.errors import RegistryError
from utils.registry import DATASETS, MODELS, NETWORKS, Registry


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    """A temporary registry root inside the project root's import space."""
    import utils.registry as reg

    root = tmp_path / "proj"
    (root / "plugins" / "sub").mkdir(parents=True)
    monkeypatch.setattr(reg, "PROJECT_ROOT", root)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in list(sys.modules):
        if name.startswith("plugins"):
            del sys.modules[name]


def write(path, text):
    path.write_text(textwrap.dedent(text))


def test_lazy_import_and_broken_neighbour(plugin_dir):
    write(plugin_dir / "plugins" / "good_arch.py", "class Good_arch:\n    pass\nclass Good_config:\n    pass\n")
    # A module whose optional dependency is missing must not break the others.
    write(plugin_dir / "plugins" / "broken_arch.py", "import not_a_real_package\nclass Broken_arch:\n    pass\n")
    reg = Registry("network", "plugins", "**/*_arch.py", suffix="_arch")
    assert reg.names() == ["Broken", "Good"]
    assert "plugins.broken_arch" not in sys.modules
    assert reg.get("Good").__name__ == "Good_arch"
    assert "plugins.broken_arch" not in sys.modules  # never imported for another name
    with pytest.raises(RegistryError, match=r"broken_arch.py, which failed to import.*not_a_real_package"):
        reg.get("Broken")


def test_duplicate_names_both_files(plugin_dir):
    write(plugin_dir / "plugins" / "a_arch.py", "class Same_arch:\n    pass\n")
    write(plugin_dir / "plugins" / "sub" / "b_arch.py", "class Same_arch:\n    pass\n")
    reg = Registry("network", "plugins", "**/*_arch.py", suffix="_arch")
    with pytest.raises(RegistryError) as err:
        reg.get("Same")
    assert "a_arch.py" in str(err.value) and "b_arch.py" in str(err.value)
    assert set(reg.duplicates()) == {"Same"}


def test_unknown_name_lists_known_and_closest(plugin_dir):
    write(plugin_dir / "plugins" / "n_arch.py", "class NAFNet_arch:\n    pass\nclass UNet_arch:\n    pass\n")
    reg = Registry("network", "plugins", "**/*_arch.py", suffix="_arch")
    with pytest.raises(RegistryError, match=r"unknown network 'NAFNte'; did you mean 'NAFNet'\?.*known: NAFNet, UNet"):
        reg.get("NAFNte")


def test_deterministic_order(plugin_dir):
    for name in ["zeta", "alpha", "mid"]:
        write(plugin_dir / "plugins" / f"{name}_arch.py", f"class {name.title()}_arch:\n    pass\n")
    reg = Registry("network", "plugins", "**/*_arch.py", suffix="_arch")
    assert reg.names() == ["Alpha", "Mid", "Zeta"]


def test_project_registries_have_no_duplicates():
    for reg in (NETWORKS, MODELS, DATASETS):
        assert reg.duplicates() == {}, f"{reg.kind}: {reg.duplicates()}"
