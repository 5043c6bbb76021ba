"""The Hydra config tree (YAML only): a package so Hydra finds it as ``pkg://mr2ct.conf`` in an installed mr2ct."""
