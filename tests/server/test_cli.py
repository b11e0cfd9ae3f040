"""The command line is built from the models: a RunConfig field is a `bnlab train` flag
with the field's default, type, choices and bounds (fast, in-process)."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import Field, ValidationError

from bnlab.model.config import RunConfig
from bnlab.server.cli import (
    add_model_flags,
    build_parser,
    describe_validation_error,
    model_from_args,
)


class Extended(RunConfig):
    """RunConfig as a later issue grows it (the experiments issue adds these two)."""

    activation: Literal["relu", "tanh"] = Field("relu", description="Hidden nonlinearity")
    init_scale: float = Field(1.0, gt=0, le=10, description="Scale of the initial weights")


def parser_for(model) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnlab train", exit_on_error=False)
    add_model_flags(parser, model)
    return parser


def test_no_flags_train_the_run_configs_defaults():
    args = build_parser().parse_args(["train"])
    assert model_from_args(RunConfig, args) == RunConfig()


def test_every_documented_flag_sets_its_field():
    args = build_parser().parse_args(
        [
            *("train", "--arch", "mlp", "--no-bn", "--optimizer", "sgd", "--lr", "0.5"),
            *("--batch-size", "60", "--steps", "600", "--eval-every", "50", "--dropout", "0"),
            *("--bn-decay", "0.9", "--bn-epsilon", "0.01", "--max-shift", "0", "--seed", "7"),
            *("--train-subset", "1000"),
        ]
    )
    assert model_from_args(RunConfig, args) == RunConfig(
        arch="mlp",
        batch_norm=False,
        optimizer="sgd",
        learning_rate=0.5,
        batch_size=60,
        steps=600,
        eval_every=50,
        dropout=0.0,
        bn_decay=0.9,
        bn_epsilon=0.01,
        max_shift=0,
        seed=7,
        train_subset=1000,
    )


def test_a_field_added_to_the_config_is_a_flag_with_its_default_and_choices():
    parser = parser_for(Extended)
    assert model_from_args(Extended, parser.parse_args([])) == Extended()
    args = parser.parse_args(["--activation", "tanh", "--init-scale", "0.5", "--lr", "0.1"])
    config = model_from_args(Extended, args)
    assert (config.activation, config.init_scale, config.learning_rate) == ("tanh", 0.5, 0.1)
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--activation", "gelu"])
    help_text = parser.format_help()
    assert "--init-scale INIT_SCALE" in help_text and "scale of the initial weights" in help_text


def test_a_bad_value_is_reported_naming_its_flag():
    args = parser_for(Extended).parse_args(["--init-scale", "0", "--lr", "-1"])
    with pytest.raises(ValidationError) as error:
        model_from_args(Extended, args)
    message = describe_validation_error(Extended, error.value)
    assert message == (
        "--lr: Input should be greater than 0; --init-scale: Input should be greater than 0"
    )
