"""Tests for codream.config and the CLI's config loading: validation naming the field, precedence,
TOML round trip."""

import logging
import os

import pytest

from codream.cli import main
from codream.cli.run_config import from_environment, load_run_config
from codream.config import (
    ConfigError,
    DreamConfig,
    RunConfig,
    ServerModelConfig,
    build,
    dotted,
    merge,
    to_toml,
)
from codream.toml_compat import tomllib


def test_defaults_are_valid_and_match_the_design():
    config = RunConfig()
    assert config.strategy == "codream"
    assert config.dream.entropy == 1.0 and config.dream.bn == 10.0
    assert config.dream.tv == 2.5e-5 and config.dream.l2 == 3e-8
    assert config.server_optimizer.name == "fedadam"
    assert build(RunConfig, {}) == config


@pytest.mark.parametrize(
    "data, field",
    [
        ({"dream": {"global_steps": 0}}, "dream.global_steps"),
        ({"dream": {"batch_size": -1}}, "dream.batch_size"),
        ({"dream": {"local_steps": 0}}, "dream.local_steps"),
        ({"dream": {"local_lr": 0}}, "dream.local_lr"),
        ({"dream": {"local_optimizer": "rmsprop"}}, "dream.local_optimizer"),
        ({"dream": {"bn": -1.0}}, "dream.bn"),
        ({"dream": {"global_steps": "many"}}, "dream.global_steps"),
        ({"dream": {"global_steps": 2.5}}, "dream.global_steps"),
        ({"dream": {"global_steps": True}}, "dream.global_steps"),
        ({"dream": {"foo": 1}}, "dream.foo"),
        ({"dream": 5}, "dream"),
        ({"strategy": "nonsense"}, "strategy"),
        ({"partition": "dirichlet"}, "partition"),
        ({"partition": "noniid"}, "partition"),
        ({"server_optimizer": {"name": "sgd"}}, "server_optimizer.name"),
        ({"server_optimizer": {"bias_correction": "maybe"}}, "server_optimizer.bias_correction"),
        ({"server_optimizer": {"lr": -0.1}}, "server_optimizer.lr"),
        ({"server_optimizer": {"beta1": 1.0}}, "server_optimizer.beta1"),  # 1 − β₁ᵗ = 0
        ({"server_optimizer": {"beta2": -0.5}}, "server_optimizer.beta2"),
        ({"server_optimizer": {"tau": 0.0}}, "server_optimizer.tau"),
        ({"clients": 0}, "clients"),
        ({"rounds": -1}, "rounds"),
        ({"models": []}, "models"),
        ({"weighting": "votes"}, "weighting"),
        ({"device": "tpu"}, "device"),
        ({"train": {"momentum": 1.0}}, "train.momentum"),
        ({"distill": {"temperature": 0}}, "distill.temperature"),
        ({"distill": {"keep_confident": 0}}, "distill.keep_confident"),
        ({"distill": {"keep_confident": 1.5}}, "distill.keep_confident"),
        ({"server_model": {"batch_size": 1}}, "server_model.batch_size"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_value_raises_naming_the_field(data, field):
    with pytest.raises(ConfigError) as info:
        build(RunConfig, data)
    message = str(info.value)
    assert message.startswith(field + ":"), message


def test_unknown_field_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^dream\.foo: unknown field; allowed: .*global_steps"):
        build(RunConfig, {"dream": {"foo": 1}})


def test_strategy_error_lists_the_choices():
    with pytest.raises(ConfigError, match="codream, fedavg, independent, centralized"):
        RunConfig(strategy="nonsense")


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match=r"^dream\.global_steps"):
        DreamConfig(global_steps=0)
    with pytest.raises(ConfigError, match=r"^server_model\.steps"):
        ServerModelConfig(steps=-1)


def test_fedavg_requires_one_model_for_all():
    with pytest.raises(ConfigError, match=r"^models: fedavg"):
        build(RunConfig, {"strategy": "fedavg", "models": ["cnn", "wide_cnn"]})
    assert build(RunConfig, {"strategy": "fedavg", "models": ["cnn", "cnn"]}).models == ("cnn", "cnn")
    # Heterogeneous models are exactly what codream allows.
    assert build(RunConfig, {"strategy": "codream", "models": ["cnn", "wide_cnn"]}).model_for(3) == "wide_cnn"


def test_environment_and_dotted_helpers():
    env = {"CODREAM_DREAM__GLOBAL_STEPS": "5", "CODREAM_MODELS": "cnn, mlp", "HOME": "/x",
           "CODREAM_SERVER_OPTIMIZER__BIAS_CORRECTION": "false"}
    data = from_environment(env)
    assert data == {"dream": {"global_steps": "5"}, "models": "cnn, mlp",
                    "server_optimizer": {"bias_correction": "false"}}
    config = build(RunConfig, data)
    assert config.dream.global_steps == 5
    assert config.models == ("cnn", "mlp")
    assert config.server_optimizer.bias_correction is False
    assert dotted({"a.b.c": 1, "a.d": 2, "e": 3}) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 1}


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('rounds = 3\nstrategy = "independent"\n[dream]\nglobal_steps = 7\nbatch_size = 16\n')
    from_file = load_run_config(str(path), {}, {})
    assert (from_file.rounds, from_file.strategy) == (3, "independent")
    assert (from_file.dream.global_steps, from_file.dream.batch_size) == (7, 16)

    env = {"CODREAM_DREAM__GLOBAL_STEPS": "9", "CODREAM_ROUNDS": "4"}
    with_env = load_run_config(str(path), env, {})
    assert (with_env.dream.global_steps, with_env.rounds) == (9, 4)
    assert with_env.dream.batch_size == 16  # untouched fields of the file's table survive the merge

    flags = {"dream.global_steps": "11", "rounds": None, "strategy": "codream"}
    with_flags = load_run_config(str(path), env, flags)
    assert with_flags.dream.global_steps == 11
    assert with_flags.rounds == 4  # a flag that was not given (None) keeps the lower layers
    assert with_flags.strategy == "codream"
    assert with_flags.dream.batch_size == 16


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="^--config"):
        load_run_config(str(tmp_path / "missing.toml"), {}, {})
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(str(bad), {}, {})
    typo = tmp_path / "typo.toml"
    typo.write_text("[dream]\nglobal_stepz = 3\n")
    with pytest.raises(ConfigError, match=r"^--config .*typo\.toml: dream\.global_stepz: unknown"):
        load_run_config(str(typo), {}, {})
    with pytest.raises(ConfigError, match=r"^CODREAM_DREAM__GLOBAL_STEPS \(environment\): must be an "
                                          r"integer, got 'lots'$"):
        load_run_config(None, {"CODREAM_DREAM__GLOBAL_STEPS": "lots"}, {})


def test_errors_name_the_layer_that_set_the_field(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("rounds = -1\n")
    with pytest.raises(ConfigError, match=r"^--rounds: must be >= 0, got -3$"):
        load_run_config(str(path), {"CODREAM_ROUNDS": "-2"}, {"rounds": "-3"})
    with pytest.raises(ConfigError, match=r"^CODREAM_ROUNDS \(environment\): must be >= 0, got -2$"):
        load_run_config(str(path), {"CODREAM_ROUNDS": "-2"}, {"rounds": None})
    with pytest.raises(ConfigError, match=r"^--config .*run\.toml: rounds: must be >= 0, got -1$"):
        load_run_config(str(path), {}, {})
    with pytest.raises(ConfigError, match=r"^--set dream\.bn: must be >= 0$"):
        load_run_config(None, {}, {"dream.bn": "-1"})
    with pytest.raises(ConfigError, match=r"^--nodes: must be >= 1, got 0$"):
        load_run_config(None, {}, {"clients": 0}, flag_names={"clients": "--nodes"})
    with pytest.raises(ConfigError, match=r"^CODREAM_COLOUR \(environment\): unknown field"):
        load_run_config(None, {"CODREAM_COLOUR": "blue"}, {})
    # A default at fault (here through a check of the whole config) keeps the field's name.
    def refuse(config):
        raise ConfigError("min_client_size: too large for this data set")
    with pytest.raises(ConfigError, match=r"^min_client_size: too large"):
        load_run_config(None, {}, {}, check=refuse)


def test_the_node_token_variable_is_not_run_configuration():
    environ = {"CODREAM_NODE_TOKEN": "s3cret", "CODREAM_SEED": "3"}
    assert from_environment(environ) == {"seed": "3"}
    assert load_run_config(None, environ, {}).seed == 3


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(),
        build(RunConfig, {
            "strategy": "fedavg", "models": ["wide_cnn", "wide_cnn"], "partition": "dirichlet:0.1",
            "out": 'runs/"quoted" \\ dir', "device": "cuda:1",
            "dream": {"global_steps": 3, "local_optimizer": "adam", "tv": 1.5e-7, "l2": 0.0},
            "server_optimizer": {"name": "fedavg", "bias_correction": False, "tau": 1e-3},
            "distill": {"temperature": 4.0},
        }),
    ],
)
def test_to_toml_round_trip(config):
    text = to_toml(config)
    assert build(RunConfig, tomllib.loads(text)) == config


@pytest.fixture
def restore_logging():
    """cli.main configures the root logger; put it back so later tests are not affected."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["simulate", "--strategy", "nonsense"], "--strategy"),
        (["simulate", "--partition", "dirichlet"], "--partition"),
        (["simulate", "--set", "dream.foo=1"], "--set dream.foo"),
        (["simulate", "--set", "dream.global_steps=0"], "--set dream.global_steps"),
        (["simulate", "--set", "server_optimizer.name=adagrad"], "--set server_optimizer.name"),
        (["simulate", "--set", "novalue"], "--set"),
    ],
)
def test_cli_configuration_error_exits_2_naming_the_flag(argv, flag, capsys, monkeypatch, tmp_path,
                                                         restore_logging):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("CODREAM_")]:
        monkeypatch.delenv(key)
    code = main([*argv, "--no-progress", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"codream simulate: error: {flag}"), captured.err
    assert captured.err.count("\n") == 1  # one line
    assert not (tmp_path / "run").exists()  # nothing ran


def test_cli_environment_error_exits_2(capsys, monkeypatch, tmp_path, restore_logging):
    monkeypatch.setenv("CODREAM_DREAM__GLOBAL_STEPS", "-3")
    code = main(["simulate", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "CODREAM_DREAM__GLOBAL_STEPS (environment): must be >= 1" in capsys.readouterr().err
