"""A submit's body is read by plain_run_request when it can, by RunCreateSerializer otherwise:
the two must never disagree about a body the fast one takes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from runs import training_config
from runs.api.serializers import RunCreateSerializer, plain_run_request

FIELDS = [
    "dataset_key",
    "model_id",
    "mode",
    "algorithm",
    "dry_run",
    "timeout_seconds",
    "client_request_id",
    "output_dir",
    "resources",
    *training_config.PARAM_NAMES,
]
# Values near every edge the serializer has: types it coerces, blanks and whitespace it trims,
# control and surrogate characters it refuses, limits on either side, numbers it cannot take.
TEXTS = st.sampled_from(
    [
        "tunix-demo-v1",
        "google/gemma-3-270m",
        "tunix-rt/tiny-llama3",
        "Tunix-Demo",
        " tunix-demo-v1",
        "tunix-demo-v1\n",
        "",
        "   ",
        "a" * 128,
        "a" * 129,
        "o/" + "n" * 127,
        "key-1",
        "k\x00y",
        "k\ud800y",
        "dry-run",
        "local",
        "sync",
        "true",
        "3",
        "1e-3",
        "naïve",
        "sft",
        "dpo",
        "orpo",
        "grpo",
        "answer_match",
        "length_penalty",
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=-3, max_value=10),
    st.sampled_from([0, 1, 16, 512, 513, 2048, 32768, 32769, 2**31 - 1, 2**31, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-3, 0.5, 0.51, 1.0, 3.0, 4096.0, 16.0, -0.0]),
)
VALUES = st.one_of(
    TEXTS,
    NUMBERS,
    st.booleans(),
    st.none(),
    st.just([]),
    st.just({}),
    st.sampled_from([{"kind": "gpu"}, {"kind": "tpu", "count": 2, "device_type": "v5e"}]),
)
VALID = st.fixed_dictionaries(
    {"dataset_key": st.just("tunix-demo-v1"), "model_id": st.just("tunix-rt/tiny-llama3")},
    optional={
        "mode": st.sampled_from(["dry-run", "local"]),
        "num_epochs": st.integers(min_value=1, max_value=100),
        "learning_rate": st.floats(min_value=1e-6, max_value=1.0),
        "client_request_id": st.just("key-1"),
        # Each algorithm with none, some or other algorithms' hyperparameters given.
        "algorithm": st.sampled_from(["sft", "dpo", "orpo", "grpo"]),
        "beta": st.floats(min_value=0.01, max_value=1.0),
        "num_generations": st.integers(min_value=1, max_value=8),
        "reward": st.sampled_from(["answer_match", "format", "nope"]),
    },
)
BODIES = st.one_of(
    # A body that would be taken, with one field changed to anything: where a wrong reading
    # would show.
    st.builds(
        lambda body, name, value: {**body, name: value},
        VALID,
        st.sampled_from([*FIELDS, "unknown"]),
        VALUES,
    ),
    st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), VALUES, max_size=8),
    st.fixed_dictionaries(
        {
            "dataset_key": st.one_of(st.just("tunix-demo-v1"), TEXTS),
            "model_id": st.one_of(st.just("tunix-rt/tiny-llama3"), TEXTS),
        },
        optional=dict.fromkeys(FIELDS[2:], VALUES),
    ),
    st.lists(VALUES, max_size=2),
    VALUES,
)


def _serializer_reading(body: Any) -> Any:
    serializer = RunCreateSerializer(data=body)
    return serializer.run_request() if serializer.is_valid() else None


@given(BODIES)
@hypothesis_settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@example({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"})
@example({"dataset_key": "d", "model_id": "m", "learning_rate": 1, "dry_run": False})
@example({"dataset_key": "d", "model_id": "m", "num_epochs": 3.0})
@example({"dataset_key": "d", "model_id": "m", "learning_rate": 0})
@example({"dataset_key": "d", "model_id": "m", "mode": "local", "dry_run": True})
@example({"dataset_key": "d", "model_id": "m", "client_request_id": " key"})
@example({"dataset_key": "d", "model_id": "m", "client_request_id": "k\x00y"})
@example({"dataset_key": "d", "model_id": "m", "client_request_id": "k\ud800y"})
def test_a_body_the_fast_reader_takes_is_read_as_the_serializer_reads_it(body: Any) -> None:
    fast = plain_run_request(body)
    if fast is not None:
        assert _serializer_reading(body) == fast


@pytest.mark.parametrize(
    "body",
    [
        {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"},
        {
            "dataset_key": "tunix-demo-v1",
            "model_id": "tunix-rt/tiny-llama3",
            "mode": "local",
            "learning_rate": 0.001,
            "num_epochs": 2,
            "max_steps": None,
            "timeout_seconds": 600,
            "client_request_id": "retry-key-1",
        },
        {"dataset_key": "tunix-demo-v1", "model_id": "m", "dry_run": False, "lora_alpha": 8},
        {"dataset_key": "pairs-v1", "model_id": "m", "algorithm": "orpo", "lambda_orpo": 0.5},
        {
            "dataset_key": "math-v1",
            "model_id": "m",
            "algorithm": "grpo",
            "num_generations": 2,
            "reward": "format",
            "temperature": 0.7,
        },
    ],
)
def test_what_clients_send_takes_the_fast_path_and_reads_the_same(body: dict[str, Any]) -> None:
    fast = plain_run_request(body)
    assert fast is not None
    assert fast == _serializer_reading(body)


@pytest.mark.parametrize(
    "body",
    [
        {"dataset_key": "tunix-demo-v1"},  # missing model_id
        {"dataset_key": "Tunix", "model_id": "m"},
        {"dataset_key": "d", "model_id": "m", "batch_size": "8"},  # coerced by DRF
        {"dataset_key": "d", "model_id": "m", "learning_rate": 2.0},
        {"dataset_key": "d", "model_id": "m", "output_dir": "/tmp"},
        {"dataset_key": "d", "model_id": "m", "typo": 1},
        {"dataset_key": "d", "model_id": "m", "beta": 0.1},  # DPO's, ORPO's and GRPO's
        {"dataset_key": "d", "model_id": "m", "algorithm": "dpo", "lambda_orpo": 0.1},
        {"dataset_key": "d", "model_id": "m", "algorithm": "grpo", "num_generations": 1},
        {"dataset_key": "d", "model_id": "m", "algorithm": "grpo", "reward": "code"},
        {"dataset_key": "d", "model_id": "m", "algorithm": "ppo"},
        ["not", "an", "object"],
    ],
)
def test_anything_else_is_left_to_the_serializer(body: Any) -> None:
    assert plain_run_request(body) is None
