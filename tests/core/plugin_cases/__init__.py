"""Small plugins for the loader tests, and a way to "install" one without pip.

They declare no models: a table defined here would join the shared metadata
and make the models-vs-migrations drift check fail for the whole run.
"""
from __future__ import annotations

from pathlib import Path

GROUP = "lunaos.plugins"


def write_distribution(root: Path, dist_name: str, entry_points: dict[str, str]) -> Path:
    """Write the `.dist-info` an installer would leave, so `importlib.metadata` finds
    the entry points of any directory on sys.path / PYTHONPATH holding it."""
    info = root / f"{dist_name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1.0\n")
    lines = [f"[{GROUP}]"] + [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root
