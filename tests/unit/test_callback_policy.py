"""Where callbacks may go (mwa_staging.callback_policy): each rule, with a fake resolver."""

from __future__ import annotations

import asyncio

import pytest

from mwa_staging.callback_policy import (
    CallbackRefused,
    check_target,
    check_url,
    parse_networks,
)
from mwa_staging.settings import Settings

LOOPBACK = parse_networks(["127.0.0.0/8"])


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return table.get(host, [])

    return resolve


def target(url: str, hosts: list[str] | None = None, networks=(), table=None) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(check_target(url, hosts or [], list(networks), resolver(table or {})))


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@asvo.example.org/cb",
        "https://user@asvo.example.org/cb",
        "https://:pw@asvo.example.org/cb",
    ],
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    with pytest.raises(CallbackRefused, match="must not hold credentials") as err:
        check_url(url, [], [])
    assert "pw" not in str(err.value) and "user" not in str(err.value)


def test_host_off_the_list_is_refused_and_on_it_allowed() -> None:
    allowed = ["asvo.example.org", ".portal.example.net"]
    check_url("https://ASVO.example.org./cb", allowed, [])
    check_url("https://a.portal.example.net/cb", allowed, [])
    check_url("https://portal.example.net/cb", allowed, [])
    for url in ("https://evil.example.org/", "https://asvo.example.org.evil.test/",
                "https://xportal.example.net/"):  # fmt: skip
        with pytest.raises(CallbackRefused, match="not among the allowed callback hosts"):
            check_url(url, allowed, [])


def test_empty_list_allows_any_public_host() -> None:
    target("https://anything.example.org/cb", table={"anything.example.org": ["93.184.215.14"]})


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/cb", "loopback"),
        ("http://127.9.9.9/cb", "loopback"),
        ("http://[::1]/cb", "loopback"),
        ("http://localhost/cb", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_special_literal_addresses_are_refused(url: str, kind: str) -> None:
    with pytest.raises(CallbackRefused, match=kind):
        check_url(url, [], [])


def test_names_resolving_to_special_addresses_are_refused() -> None:
    table = {"sneaky.example.org": ["93.184.215.14", "169.254.169.254"],
             "lo.example.org": ["127.0.0.1"]}  # fmt: skip
    with pytest.raises(CallbackRefused, match=r"sneaky\.example\.org \(169\.254\.169\.254\)"):
        target("https://sneaky.example.org/cb", table=table)
    with pytest.raises(CallbackRefused, match="loopback"):
        target("https://lo.example.org/cb", ["lo.example.org"], table=table)  # on the list: still


def test_allowed_networks_let_special_addresses_through() -> None:
    check_url("http://127.0.0.1:9/cb", [], LOOPBACK)
    target("https://lo.example.org/cb", networks=LOOPBACK, table={"lo.example.org": ["127.0.0.1"]})
    with pytest.raises(CallbackRefused, match="metadata"):
        check_url("http://169.254.169.254/", [], LOOPBACK)


def test_a_name_that_does_not_resolve_is_not_a_refusal() -> None:
    target("https://nowhere.example.org/cb")  # the attempt fails and is retried instead


@pytest.mark.parametrize("url", ["ftp://a.example.org/", "/relative", "http:///x", "http://[::1/"])
def test_not_an_http_url(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_url(url, [], [])


def test_settings_read_lists_as_json_or_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", '["a.test", "b.test"]')
    monkeypatch.setenv("CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8, ::1")
    settings = Settings()
    assert settings.callback_allowed_hosts == ["a.test", "b.test"]
    assert [str(n) for n in settings.callback_networks()] == ["127.0.0.0/8", "::1/128"]
    monkeypatch.setenv("CALLBACK_ALLOWED_NETWORKS", "not-a-network")
    with pytest.raises(ValueError):
        Settings()


def test_tls_verification_off_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    assert Settings().warn_insecure() == []
    found = Settings(scout_tls_verify=False, kafka_tls_verify=False).warn_insecure()
    assert [line.split("=")[0] for line in found] == ["SCOUT_TLS_VERIFY", "KAFKA_TLS_VERIFY"]
    assert "NOT verified" in caplog.text
