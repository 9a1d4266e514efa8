"""Typed run configuration: one dataclass per section, a docstring per field, YAML files + dotted overrides.

    cfg = load_config("configs/toy.yaml", overrides=["algo.name=grpo", "rollout.max_tool_calls=4"])
    save_config(cfg, run_dir / "config.yaml")      # every run directory holds its resolved config

Errors (unknown key, wrong type, missing file, bad YAML) raise `ConfigError` with one line naming the key or file.
The field docstrings are the documentation: `zerotir config --show` prints them (see `describe_config`).
"""

from zerotir.config.io import (apply_overrides, config_from_dict, config_to_dict, describe_config, field_docs,
                               load_config, save_config)
from zerotir.config.schema import (BUILTIN_CONFIGS, AlgoConfig, Config, ConfigError, DataConfig, EvalConfig,
                                   LoggingConfig, ModelConfig, OptimConfig, RewardConfig, RolloutConfig,
                                   SandboxConfig, TrainConfig)

__all__ = ["BUILTIN_CONFIGS", "AlgoConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "LoggingConfig",
           "ModelConfig", "OptimConfig", "RewardConfig", "RolloutConfig", "SandboxConfig", "TrainConfig",
           "apply_overrides", "config_from_dict", "config_to_dict", "describe_config", "field_docs", "load_config",
           "save_config"]
