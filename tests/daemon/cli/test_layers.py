"""Start-up: commands that run no network must not import torch or OpenCV (each costs seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "cv2", "facenet_pytorch", "torchvision", "onnxruntime")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('HEAVY:', *sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("HEAVY:"), out.stdout
    return set(last.split()[1:])


def test_cli_module_imports_no_heavy_package() -> None:
    assert _imported_after("import daemon.cli") == set()


@pytest.mark.parametrize("argv", [["--help"], ["events", "--help"], ["gallery", "list", "--gallery", "{g}"],
                                  ["gallery", "info", "--gallery", "{g}"],
                                  ["gallery", "rename", "a", "b", "--gallery", "{g}"],
                                  ["gallery", "remove", "a", "--gallery", "{g}"]])
def test_light_commands_import_no_heavy_package(tmp_path, argv: list[str]) -> None:
    import numpy as np

    from pipeline.gallery import Gallery, Identity

    g = tmp_path / "g.db"
    gallery = Gallery.create(g, "dlib-resnet-v1@2", 128)
    v = np.eye(128, dtype=np.float32)[:1]
    gallery.replace_identities([Identity("a", v[0], v, np.zeros(1, bool), ["a.jpg"], ["sha-a"])], keep_others=False)
    gallery.close()
    args = [a.replace("{g}", str(g)) for a in argv]
    # Each command runs to its end (exit 0; --help exits through SystemExit(0)), and only then are the modules
    # counted: a command that failed early would import little and prove nothing.
    code = (f"import sys\nfrom daemon.cli import main\ntry:\n    rc = main({args!r})\nexcept SystemExit as e:\n"
            f"    rc = e.code\nassert rc == 0, rc")
    assert _imported_after(code) == set()
