"""Settings, one module per section (Frigate-style): ``models`` ([detector], [embedder]), ``gallery``,
``pipeline``, ``sinks``, ``mqtt``, ``http``, ``profiles`` ([door], [attendance]), ``paths`` ([paths]: the state
directory), and ``settings`` (the whole, loaded from TOML and the environment). ``outputs`` checks every file
a run will write before it writes any.
"""

from daemon.config.common import ConfigError
from daemon.config.settings import Settings, load_settings, with_overrides

__all__ = ["ConfigError", "Settings", "load_settings", "with_overrides"]
