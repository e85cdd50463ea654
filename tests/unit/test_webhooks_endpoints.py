"""Which webhook URLs are refused, at report creation (check_url) and at send time (vetted_addresses).
DNS is faked: `dns` maps a hostname to the addresses it resolves to; any other name does not resolve."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from meterline.errors import InvalidInput
from meterline.webhooks import EndpointPolicy, RefusedEndpoint

STRICT = EndpointPolicy()
LOCAL_DEV = EndpointPolicy(allow_loopback=True)


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {"hooks.example.com": ["93.184.215.14"]}

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return answers


def refusal(policy: EndpointPolicy, url: str, field: str = "endpoint.url") -> str:
    """The reason check_url gives, after checking it names `field`."""
    with pytest.raises(InvalidInput) as raised:
        policy.check_url(url, field)
    [error] = raised.value.errors
    assert error.field == field
    assert raised.value.detail == f"{field} {error.reason}"
    return error.reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/usage", "must use https"),
        ("ftp://hooks.example.com/usage", "must use https"),
        ("hooks.example.com/usage", "is not a URL"),
        ("", "is not a URL"),
        ("https://[::1/usage", "is not a URL"),
        ("https://hooks.example.com/a b", "must not contain spaces or control characters"),
        ("https://user:pass@hooks.example.com/usage", "must not contain a user name or password"),
        ("https://token@hooks.example.com/usage", "must not contain a user name or password"),
        ("https:///usage", "has no host"),
        ("https://:443/usage", "has no host"),
        ("https://hooks.example.com:99999/usage", "has a bad port"),
        ("https://hooks.example.com:https/usage", "has a bad port"),
        ("https://hooks.example.com:0/usage", "has a bad port"),
        ("https://hooks.example.com/usage#part", "must not contain a fragment"),
        ("https://hooks.example.com/" + "a" * 2048, "is longer than 2048 characters"),
        ("https://bad..name/usage", "has a host that is not a valid hostname"),
        ("https://-bad.example.com/usage", "has a host that is not a valid hostname"),
        ("https://127.0.0.1/usage", "host 127.0.0.1 is a loopback address"),
        ("https://127.8.9.10:8443/usage", "host 127.8.9.10 is a loopback address"),
        ("https://localhost/usage", "host localhost is a loopback name"),
        ("https://api.localhost/usage", "host api.localhost is a loopback name"),
        ("https://LOCALHOST./usage", "host localhost is a loopback name"),
        ("https://ip-10-0-0-1.ec2.internal/usage", "host ip-10-0-0-1.ec2.internal is an internal name"),
        ("https://10.1.2.3/usage", "host 10.1.2.3 is a private address"),
        ("https://172.16.0.1/usage", "host 172.16.0.1 is a private address"),
        ("https://172.31.255.254/usage", "host 172.31.255.254 is a private address"),
        ("https://192.168.1.1/usage", "host 192.168.1.1 is a private address"),
        ("https://169.254.169.254/latest/meta-data", "host 169.254.169.254 is the instance metadata address"),
        ("https://169.254.10.1/usage", "host 169.254.10.1 is a link-local address"),
        ("https://100.64.0.1/usage", "host 100.64.0.1 is a carrier-grade NAT address"),
        ("https://100.127.255.254/usage", "host 100.127.255.254 is a carrier-grade NAT address"),
        ("https://0.0.0.0/usage", "host 0.0.0.0 is an unspecified address"),
        ("https://224.0.0.1/usage", "host 224.0.0.1 is a multicast address"),
        ("https://240.0.0.1/usage", "host 240.0.0.1 is a reserved address"),
        ("https://[::1]/usage", "host ::1 is a loopback address"),
        ("https://[::]/usage", "host :: is an unspecified address"),
        ("https://[fe80::1]/usage", "host fe80::1 is a link-local address"),
        ("https://[fd12:3456::1]/usage", "host fd12:3456::1 is a private address"),
        ("https://[fd00:ec2::254]/latest", "host fd00:ec2::254 is the instance metadata address"),
        ("https://[ff02::1]/usage", "host ff02::1 is a multicast address"),
        ("https://[::ffff:127.0.0.1]/usage", "host ::ffff:7f00:1 is a loopback address"),
        ("https://[::ffff:10.0.0.1]/usage", "host ::ffff:a00:1 is a private address"),
        ("https://[::ffff:169.254.169.254]/usage", "host ::ffff:a9fe:a9fe is the instance metadata address"),
        ("https://[64:ff9b::10.0.0.1]/usage", "host 64:ff9b::a00:1 is a private address"),  # NAT64
        ("https://[2002:a9fe:a9fe::]/usage", "host 2002:a9fe:a9fe:: is the instance metadata address"),  # 6to4
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    assert refusal(STRICT, url) == reason


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["10.0.0.7"], "a private address"),
        (["127.0.0.1"], "a loopback address"),
        (["169.254.169.254"], "the instance metadata address"),
        (["::ffff:192.168.0.1"], "a private address"),
        (["93.184.215.14", "172.20.0.5"], "a private address"),  # one bad address is enough
        (["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "fe80::1%eth0"], "a link-local address"),
    ],
)
def test_check_url_refuses_hostname_resolving_to_refused_address(
    dns: dict[str, list[str]], addresses: list[str], reason: str
) -> None:
    dns["sneaky.example.net"] = addresses
    assert refusal(STRICT, "https://sneaky.example.net/hook") == f"host sneaky.example.net resolves to {reason}"


def test_check_url_names_the_given_field() -> None:
    assert refusal(STRICT, "https://10.0.0.1/", field="endpoint") == "host 10.0.0.1 is a private address"


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.215.14/usage",
        "https://[2606:4700:4700::1111]:8443/usage?tenant=a",
        "https://hooks.example.com/usage",
        "https://HOOKS.example.com:443/usage",
        "https://does-not-resolve.example.org/usage",  # DNS may be down now; send time checks again
    ],
)
def test_check_url_accepts(url: str) -> None:
    STRICT.check_url(url)


def test_allow_loopback_lets_http_to_loopback_through(dns: dict[str, list[str]]) -> None:
    dns["localhost"] = ["127.0.0.1", "::1"]
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]:8080/hook", "https://127.0.0.1/hook", "http://localhost:9/"):
        LOCAL_DEV.check_url(url)
    assert LOCAL_DEV.vetted_addresses("http://localhost:9/") == [("127.0.0.1", 9), ("::1", 9)]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://10.0.0.1/hook", "host 10.0.0.1 is a private address"),
        ("http://10.0.0.1/hook", "host 10.0.0.1 is a private address"),
        ("https://169.254.169.254/", "host 169.254.169.254 is the instance metadata address"),
        ("http://hooks.example.com/hook", "must use https (http is allowed only for loopback addresses)"),
        ("http://does-not-resolve.example.org/", "must use https (http is allowed only for loopback addresses)"),
        ("https://db.internal/", "host db.internal is an internal name"),
    ],
)
def test_allow_loopback_still_refuses_everything_else(url: str, reason: str) -> None:
    assert refusal(LOCAL_DEV, url) == reason


def test_vetted_addresses_returns_every_address_with_the_port(dns: dict[str, list[str]]) -> None:
    dns["multi.example.com"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]
    assert STRICT.vetted_addresses("https://multi.example.com/hook") == [
        ("93.184.215.14", 443),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443),
    ]
    assert STRICT.vetted_addresses("https://93.184.215.14:8443/hook") == [("93.184.215.14", 8443)]


def test_vetted_addresses_refuses_a_name_rebound_to_a_private_address(dns: dict[str, list[str]]) -> None:
    url = "https://hooks.example.com/usage"
    STRICT.check_url(url)  # public when the report was created
    dns["hooks.example.com"] = ["10.0.0.5"]  # re-pointed before delivery
    with pytest.raises(RefusedEndpoint, match="^host hooks.example.com resolves to a private address$"):
        STRICT.vetted_addresses(url)


def test_vetted_addresses_refuses_what_check_url_refuses() -> None:
    with pytest.raises(RefusedEndpoint, match="^must use https$"):
        STRICT.vetted_addresses("http://hooks.example.com/")
    with pytest.raises(RefusedEndpoint, match="^host 127.0.0.1 is a loopback address$"):
        STRICT.vetted_addresses("https://127.0.0.1/")


def test_vetted_addresses_refuses_a_name_that_does_not_resolve() -> None:
    with pytest.raises(RefusedEndpoint, match="^host gone.example.org does not resolve$"):
        STRICT.vetted_addresses("https://gone.example.org/hook")


@pytest.mark.parametrize(("raw", "expected"), [(None, False), ("false", False), ("true", True), (" TRUE ", True)])
def test_policy_from_env(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: bool) -> None:
    if raw is None:
        monkeypatch.delenv("METERLINE_WEBHOOK_ALLOW_LOOPBACK", raising=False)
    else:
        monkeypatch.setenv("METERLINE_WEBHOOK_ALLOW_LOOPBACK", raw)
    assert EndpointPolicy.from_env() == EndpointPolicy(allow_loopback=expected)


def test_policy_from_env_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_WEBHOOK_ALLOW_LOOPBACK", "yes")
    with pytest.raises(RuntimeError, match="METERLINE_WEBHOOK_ALLOW_LOOPBACK"):
        EndpointPolicy.from_env()
