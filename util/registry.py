"""Find a class by name in a package: ``--model X`` -> models/X_model.py:XModel, ``--dataset_mode Y`` ->
data/Y_dataset.py:YDataset (case-insensitive, underscores dropped)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def available(package: ModuleType, suffix: str) -> list[str]:
    """Names ``X`` of every ``X<suffix>.py`` module in ``package`` (e.g. suffix '_model')."""
    names = (m.name[:len(m.name) - len(suffix)] for m in pkgutil.iter_modules(package.__path__)
             if m.name.endswith(suffix))
    return sorted(n for n in names if n != 'base')


def find_class(package: ModuleType, name: str, suffix: str, base: type, flag: str) -> type:
    """The subclass of ``base`` named ``<name><suffix>`` (case-insensitive, '_' dropped) in ``package``.

    Raises ValueError listing the available names when there is none.
    """
    choices = available(package, suffix)
    if name not in choices:
        raise ValueError(f'unknown {flag} "{name}"; available: {", ".join(choices)}')
    module = importlib.import_module(f'{package.__name__}.{name}{suffix}')
    target = (name + suffix).replace('_', '').lower()
    for cls_name, cls in vars(module).items():
        if cls_name.lower() == target and isinstance(cls, type) and issubclass(cls, base):
            return cls
    raise ValueError(f'{module.__file__} must define a subclass of {base.__name__} named like '
                     f'{(name + suffix).title().replace("_", "")} (case-insensitive)')
