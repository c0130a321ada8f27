"""Policy configs per kind: what passes, and the keyed message each mistake gets."""

import pytest
from django.core.exceptions import ValidationError

from policies import kinds
from policies.choices import PolicyAction, PolicyKind
from policies.configs import config_errors
from policies.models import Policy
from projects.tests.factories import ProjectFactory

from .factories import PolicyFactory

VALID = [
    (PolicyKind.BUDGET, {"amount_usd": 25, "window": "day"}),
    (PolicyKind.BUDGET, {"amount_usd": 0.5, "window": "week", "timezone": "Europe/Berlin"}),
    (PolicyKind.BUDGET, {"amount_usd": 100, "window": "month", "timezone": "America/New_York", "agent": "writer"}),
    (PolicyKind.BUDGET, {"amount_usd": 3, "window": "rolling", "days": 7, "model": "openai/*", "workflow": "wf"}),
    (PolicyKind.BUDGET, {"amount_usd": 1, "window": "day", "timezone": "UTC"}),
    (PolicyKind.RUN_CEILING, {"max_usd": 0.5}),
    (PolicyKind.RUN_CEILING, {"max_tokens": 200_000}),
    (PolicyKind.RUN_CEILING, {"max_usd": 0.5, "max_tokens": 200_000}),
    (PolicyKind.RATE_LIMIT, {"max_runs": 60, "per": "minute"}),
    (PolicyKind.RATE_LIMIT, {"max_runs": 5, "per": "hour", "scope": "api_key"}),
    (PolicyKind.CONCURRENCY, {"max_active": 2}),
    (PolicyKind.CONCURRENCY, {"max_active": 1, "workflow": "nightly", "agent": "writer"}),
    (PolicyKind.MODEL_ALLOWLIST, {"models": ["openai/gpt-4o-mini", "anthropic/*", "echo-1"]}),
    (PolicyKind.TOOL_ALLOWLIST, {"tools": ["search", "calc*"]}),
    (PolicyKind.APPROVAL, {"risk_class": "destructive"}),
    (PolicyKind.APPROVAL, {"tools": ["deploy"], "role": "owner"}),
    (PolicyKind.APPROVAL, {"min_cost_usd": 0}),
    (PolicyKind.BUDGET, {"amount_usd": 0.000001, "window": "day"}),
    (PolicyKind.RUN_CEILING, {"max_usd": 123456789.123456}),
]


@pytest.mark.parametrize(("kind", "config"), VALID)
def test_a_valid_config_has_no_errors(kind, config):
    assert config_errors(kind, config) == []


@pytest.mark.parametrize("kind", PolicyKind.values)
def test_each_kinds_published_example_is_valid(kind):
    assert config_errors(kind, kinds.get(kind).example) == []


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        (PolicyKind.BUDGET, {"window": "day"}, ["amount_usd: required, e.g. 25."]),
        (PolicyKind.BUDGET, {"amount_usd": 5}, ['window: required, e.g. "day".']),
        (PolicyKind.BUDGET, {}, ["amount_usd: required, e.g. 25.", 'window: required, e.g. "day".']),
        (
            PolicyKind.BUDGET,
            {"amount_usd": 5, "window": "year"},
            ["window: 'year' is not one of ['day', 'week', 'month', 'rolling']"],
        ),
        (
            PolicyKind.BUDGET,
            {"amount_usd": 5, "window": "rolling"},
            ['days: a rolling window needs its length in days, e.g. {"window": "rolling", "days": 7}.'],
        ),
        (PolicyKind.BUDGET, {"amount_usd": 5, "window": "day", "days": 3}, ["days: only a rolling window takes days."]),
        (
            PolicyKind.BUDGET,
            {"amount_usd": 5, "window": "day", "timezone": "Mars/Olympus"},
            ["timezone: 'Mars/Olympus' is not an IANA timezone, e.g. Europe/Berlin."],
        ),
        (
            PolicyKind.BUDGET,
            {"amount_usd": 0, "window": "day"},
            ["amount_usd: 0 is less than or equal to the minimum of 0"],
        ),
        (
            PolicyKind.BUDGET,
            {"amount_usd": "10", "window": "day"},
            ["amount_usd: '10' is not of type 'number'"],
        ),
        (PolicyKind.RUN_CEILING, {}, ["Give max_usd, max_tokens or both."]),
        (PolicyKind.RUN_CEILING, {"max_tokens": 0}, ["max_tokens: 0 is less than the minimum of 1"]),
        (PolicyKind.RATE_LIMIT, {"max_runs": 5, "per": "day"}, ["per: 'day' is not one of ['minute', 'hour']"]),
        (
            PolicyKind.RATE_LIMIT,
            {"max_runs": 5, "per": "minute", "scope": "user"},
            ["scope: 'user' is not one of ['project', 'api_key']"],
        ),
        (PolicyKind.CONCURRENCY, {}, ["max_active: required, e.g. 2."]),
        (PolicyKind.MODEL_ALLOWLIST, {"models": []}, ["models: [] should be non-empty"]),
        (PolicyKind.TOOL_ALLOWLIST, {"tools": [""]}, ["tools/0: '' should be non-empty"]),
        (PolicyKind.APPROVAL, {"role": "admin"}, ["Give at least one of risk_class, tools or min_cost_usd."]),
        (
            PolicyKind.APPROVAL,
            {"risk_class": "explosive"},
            ["risk_class: 'explosive' is not one of ['read', 'write', 'destructive', 'spends_money']"],
        ),
    ],
)
def test_an_invalid_config_gets_a_message_naming_its_key(kind, config, expected):
    assert config_errors(kind, config) == expected


@pytest.mark.parametrize(
    ("kind", "config", "key"),
    [
        (PolicyKind.BUDGET, {"amount_usd": 0.0000001, "window": "day"}, "amount_usd"),
        (PolicyKind.RUN_CEILING, {"max_usd": 1.0000005}, "max_usd"),
        (PolicyKind.APPROVAL, {"min_cost_usd": 0.1234567}, "min_cost_usd"),
    ],
)
def test_money_finer_than_the_ledger_is_refused(kind, config, key):
    assert config_errors(kind, config) == [f"{key}: at most 6 decimal places (the ledger keeps micro-dollars)."]


@pytest.mark.parametrize("kind", PolicyKind.values)
def test_an_unknown_key_is_named_with_the_keys_the_kind_takes(kind):
    config = {**kinds.get(kind).example, "colour": "red"}

    (message,) = config_errors(kind, config)

    assert message.startswith(f"colour: unknown key; {kind} takes ")
    for name in kinds.get(kind).example:
        assert name in message


@pytest.mark.parametrize("config", [[], "25", 25, None])
@pytest.mark.parametrize("kind", PolicyKind.values)
def test_a_config_that_is_not_an_object_is_refused_with_an_example(kind, config):
    (message,) = config_errors(kind, config)

    assert message.startswith("Must be a JSON object, e.g. {")


def test_an_unknown_kind_leaves_the_message_to_the_kind_field():
    assert config_errors("lottery", {"anything": 1}) == []


# ------------------------------------------------------------------------------
# Policy.full_clean(): config and action together
# ------------------------------------------------------------------------------
def unsaved(**fields) -> Policy:
    return PolicyFactory.build(project=ProjectFactory(), **fields)


@pytest.mark.django_db
def test_full_clean_reports_config_errors_under_config():
    policy = unsaved(config={"amount_usd": 5, "window": "rolling"})

    with pytest.raises(ValidationError) as caught:
        policy.full_clean()

    assert caught.value.message_dict == {
        "config": ['days: a rolling window needs its length in days, e.g. {"window": "rolling", "days": 7}.']
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "config"),
    [
        (PolicyKind.RATE_LIMIT, {"max_runs": 5, "per": "minute"}),
        (PolicyKind.CONCURRENCY, {"max_active": 2}),
    ],
)
def test_full_clean_refuses_an_action_the_kind_cannot_take(kind, config):
    policy = unsaved(kind=kind, config=config, action=PolicyAction.REQUIRE_APPROVAL)

    with pytest.raises(ValidationError) as caught:
        policy.full_clean()

    assert caught.value.message_dict == {
        "action": [f"A {kind} policy can block, warn; not require_approval."],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "action"), [(kind.name, action) for kind in kinds.all_kinds() for action in kind.actions]
)
def test_full_clean_accepts_every_action_the_kind_allows(kind, action):
    unsaved(kind=kind, config=kinds.get(kind).example, action=action).full_clean()


@pytest.mark.django_db
def test_full_clean_reports_config_and_action_together():
    policy = unsaved(kind=PolicyKind.RATE_LIMIT, config={"per": "minute"}, action="require_approval")

    with pytest.raises(ValidationError) as caught:
        policy.full_clean()

    assert set(caught.value.message_dict) == {"config", "action"}
    assert caught.value.message_dict["config"] == ["max_runs: required, e.g. 60."]


@pytest.mark.django_db
def test_the_factory_default_is_a_valid_blocking_budget():
    policy = PolicyFactory()

    policy.full_clean()

    assert (policy.kind, policy.action) == (PolicyKind.BUDGET, PolicyAction.BLOCK)


@pytest.mark.parametrize("amount", [1e23, 1e308, "1e30"])
def test_an_amount_too_large_for_the_ledger_is_a_field_error_not_a_crash(amount):
    errors = config_errors(PolicyKind.BUDGET, {"amount_usd": amount, "window": "month"})

    assert errors
    assert all(message.startswith("amount_usd: ") for message in errors)
