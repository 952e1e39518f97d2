"""The fetch stage's [fetch] keys reach the HTTP client, and the two share one set of defaults."""

import dataclasses

import pytest

from kgclip.config import ConfigError, FetchConfig, parse
from kgclip.fetch.http import FetchPolicy, _blocked_category
from kgclip.fetch.stage import policy_of

BASE = {"name": "x", "search": {"corpus": {"source": "/x"}}}


def test_allow_networks_and_socket_timeouts_are_settable_and_wired():
    cfg = parse(
        {
            **BASE,
            "fetch": {
                "allow_networks": ["127.0.0.0/8", "fd00:1::/64"],
                "connect_timeout_s": 3,
                "read_timeout_s": 7.5,
            },
        }
    )
    policy = policy_of(cfg.fetch)
    assert policy.allow_networks == ("127.0.0.0/8", "fd00:1::/64")
    assert (policy.connect_timeout, policy.read_timeout) == (3.0, 7.5)
    assert not policy.allow_loopback
    assert _blocked_category("127.0.0.1", policy) is None  # let through by the listed network only
    assert _blocked_category("10.0.0.1", policy) == "private"
    assert _blocked_category("127.0.0.1", policy_of(FetchConfig())) == "loopback"


@pytest.mark.parametrize(
    ("fetch", "message"),
    [
        ({"allow_networks": ["10.1.2.3/8"]}, r"fetch\.allow_networks: .*'10\.1\.2\.3/8'.*host bits"),
        ({"allow_networks": ["intranet"]}, r"fetch\.allow_networks: .*'intranet' is not a network"),
        ({"connect_timeout_s": 0}, r"fetch\.connect_timeout_s: .*greater than 0"),
        ({"read_timeout_s": -1}, r"fetch\.read_timeout_s: .*greater than 0"),
    ],
)
def test_bad_values_are_named(fetch, message):
    with pytest.raises(ConfigError, match=message):
        parse({**BASE, "fetch": fetch})


def test_the_client_and_the_stage_have_the_same_defaults():
    """One answer to "how large may an image be" (50 MB), whether the client is used alone or by the stage."""
    alone, staged = FetchPolicy(), policy_of(FetchConfig())
    differ = {
        f.name
        for f in dataclasses.fields(FetchPolicy)
        if getattr(alone, f.name) != getattr(staged, f.name) and f.name != "user_agent"
    }
    assert differ == set()
    assert alone.max_bytes == FetchConfig().max_bytes == 50_000_000
