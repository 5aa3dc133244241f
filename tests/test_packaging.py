"""A non-editable install carries the shipped configs: the wheel built from the tracked files holds
every file under configs/, inside the nitisim package where nitisim.contract.shipped looks for them."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nitisim.contract.shipped import CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_the_top_level_configs():
    assert (ROOT / "configs").resolve() == CONFIGS
    assert (CONFIGS / "train" / "fashion-lenet.yaml").is_file()


@pytest.mark.slow
def test_the_wheel_holds_every_shipped_config(tmp_path):
    if subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True).returncode:
        pytest.skip("setuptools is not installed in this environment, so no wheel can be built here")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for name in tracked:  # a copy, so the build's own folders never land in the checkout
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to(Path((ROOT / name).readlink()))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("nitisim-*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("nitisim/configs/")}
    shipped = {f"nitisim/configs/{p.relative_to(CONFIGS)}" for p in CONFIGS.rglob("*.yaml")}
    assert shipped and packed == shipped
