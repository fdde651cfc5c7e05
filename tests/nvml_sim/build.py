"""Builds the simulated libnvidia-ml.so.1 with the system gcc against NVIDIA's nvml.h.

The header comes from the PyPI wheel ``nvidia-nvml-dev`` (a test dependency),
so the struct layouts are the driver's. Prints the build directory; rebuilds
only when the source or header changed.
Usage: python tests/nvml_sim/build.py [OUT_DIR]
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "nvml_sim.c"


def nvml_header() -> Path:
    """nvml.h from the installed nvidia-nvml-dev wheel."""
    try:
        files = metadata.files("nvidia-nvml-dev") or []
    except metadata.PackageNotFoundError as err:
        raise SystemExit("nvidia-nvml-dev is not installed: pip install -e '.[test]'") from err
    for f in files:
        if f.name == "nvml.h":
            return Path(f.locate()).resolve()
    raise SystemExit("nvml.h not found in the nvidia-nvml-dev wheel")


def build(out_dir: Path | None = None) -> Path:
    """Compile if needed; returns the directory holding libnvidia-ml.so.1."""
    header = nvml_header()
    digest = hashlib.sha256(SOURCE.read_bytes() + header.read_bytes()).hexdigest()[:16]
    out_dir = out_dir or HERE / "build"
    lib, stamp = out_dir / "libnvidia-ml.so.1", out_dir / "stamp"
    if lib.exists() and stamp.exists() and stamp.read_text() == digest:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the NVML simulator (apt-get install -y gcc)")
    subprocess.run([gcc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                    "-fPIC", "-shared", "-fvisibility=hidden", f"-I{header.parent}",
                    "-Wl,-soname,libnvidia-ml.so.1", "-o", str(lib), str(SOURCE), "-lm"], check=True)
    stamp.write_text(digest)
    return out_dir


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
