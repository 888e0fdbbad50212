from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import REPO

from daemon.config import ConfigError, Settings, load_settings


def test_toml_env_and_override_precedence(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[embedder]\nruntime = "torch"\nflip = true\n[detector]\nmin_face_size = 30\n')
    s = load_settings(cfg)
    assert s.embedder.runtime == "torch" and s.embedder.flip and s.detector.min_face_size == 30
    monkeypatch.setenv("FACESTREAM_DETECTOR__MIN_FACE_SIZE", "40")
    assert load_settings(cfg).detector.min_face_size == 40
    assert load_settings(cfg, detector={"min_face_size": 50}).detector.min_face_size == 50


def test_unknown_keys_bad_values_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[embedder]\nmodle = 'x'\n")
    with pytest.raises(ConfigError, match=r"embedder\.modle: Extra inputs are not permitted"):
        load_settings(cfg)
    cfg.write_text("[embedder]\nmodel = 'vgg'\n")
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        load_settings(cfg)
    cfg.write_text("[embedder\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "none.toml")


def test_every_setting_has_a_description() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += walk(ann)
        return missing

    assert walk(Settings) == []


def test_example_configs_load() -> None:
    configs = sorted((REPO / "configs").glob("*.toml"))
    assert configs, "configs/ has no example TOML files"
    for cfg in configs:
        load_settings(cfg)
