"""Registries: lazy discovery, strict duplicates, helpful unknown-name errors."""
from __future__ import annotations

import sys
import textwrap

import pytest

from utils.errors import RegistryError
from utils.registry import DATASETS, LOSSES, MODELS, NETWORKS, Registry


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
    for reg in (NETWORKS, MODELS, DATASETS, LOSSES):
        assert reg.duplicates() == {}, f"{reg.kind}: {reg.duplicates()}"


def test_base_keeps_only_subclasses_found_without_import(plugin_dir):
    """Subclasses count transitively, across files, through ``from``/``import ... as``/relative
    imports and aliases; the base itself, other classes and constants do not; nothing is imported."""
    write(plugin_dir / "plugins" / "__init__.py", "")
    write(plugin_dir / "plugins" / "sub" / "__init__.py", "")
    write(plugin_dir / "plugins" / "base_model.py", """
        class BaseModel:
            pass
        class NonFiniteLossError(Exception):
            pass
        """)
    write(plugin_dir / "plugins" / "broken_model.py", """
        import not_a_real_package
        from plugins.base_model import BaseModel
        class Broken_model(BaseModel):
            pass
        """)
    write(plugin_dir / "plugins" / "a_model.py", """
        from plugins.base_model import BaseModel, NonFiniteLossError
        class Task_model(BaseModel):
            pass
        class Helper:
            pass
        class Error_model(NonFiniteLossError):
            pass
        LIMIT = 3
        Old_model = Task_model
        """)
    write(plugin_dir / "plugins" / "sub" / "b_model.py", """
        import plugins.base_model as bm
        from ..a_model import Task_model as Parent
        class Child_model(Parent):
            pass
        class Direct_model(bm.BaseModel):
            pass
        class Grandchild_model(Child_model):
            pass
        """)
    reg = Registry("model_type", "plugins", "**/*_model.py", base="plugins.base_model.BaseModel")
    assert reg.names() == ["Broken_model", "Child_model", "Direct_model", "Grandchild_model", "Old_model", "Task_model"]
    assert not [m for m in sys.modules if m.startswith("plugins")]
    with pytest.raises(RegistryError, match=r"unknown model_type 'BaseModel'"):
        reg.get("BaseModel")
    with pytest.raises(RegistryError, match="failed to import.*not_a_real_package"):
        reg.get("Broken_model")
    assert reg.get("Direct_model").__name__ == "Direct_model"
    assert reg.get("Old_model") is reg.get("Task_model")
    # a class that is not a subclass once imported (rebound later in the file) is refused
    write(plugin_dir / "plugins" / "c_model.py", """
        from plugins.base_model import BaseModel
        class Fake_model(BaseModel):
            pass
        Fake_model = int
        """)
    with pytest.raises(RegistryError, match="not a subclass of plugins.base_model.BaseModel"):
        reg.get("Fake_model")


def test_project_model_types_are_task_classes_only():
    from models import create_model, model_names
    from models.base_model import BaseModel

    names = model_names()
    assert "PairedRestoration_model" in names and "BaseModel" not in names and "NonFiniteLossError" not in names
    for name in names:
        cls = MODELS.get(name)
        assert issubclass(cls, BaseModel) and cls is not BaseModel, name
    with pytest.raises(RegistryError, match="unknown model_type 'NonFiniteLossError'"):
        create_model(type("Opt", (), {"model_type": "NonFiniteLossError"})())
