"""Where the installed (or source-tree) share files of avsnet_ros live.

With colcon or `pip install .` the launch/, config/ and assets/ folders are installed under
share/avsnet_ros and found through the ament index. In a development checkout (`pip install -e .`,
the Makefile's venv) they are found next to the package in the source tree.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_NAME = "avsnet_ros"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """Return the directory holding launch/, config/ and assets/ for this package."""
    # Source tree first when it is a checkout: an editable install has no share/ data files.
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception:  # ament_index_python missing or package not registered
        pass
    prefix = os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX")
    if prefix and (Path(prefix) / "share" / PACKAGE_NAME).is_dir():
        return Path(prefix) / "share" / PACKAGE_NAME
    raise FileNotFoundError(
        f"cannot find the share directory of {PACKAGE_NAME}: not a source checkout, not in the "
        "ament index (source the workspace's install/setup.bash) and not under $VIRTUAL_ENV/share"
    )


def asset_path(*parts: str) -> Path:
    """Path of a bundled asset, e.g. asset_path('checkpoints', 'avsnet_tiny')."""
    return share_dir().joinpath("assets", *parts)


def config_path(name: str) -> Path:
    """Path of a config file, e.g. config_path('avsnet.yaml')."""
    return share_dir() / "config" / name
