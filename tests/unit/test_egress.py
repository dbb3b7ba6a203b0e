"""The SSRF guard: the matrix of refused destinations, pinning against DNS rebinding, redirects, allow-lists."""

from __future__ import annotations

import httpx
import pytest

from shared.egress import EgressPolicy, EgressRefusedError, GuardedTransport, refusal_reason

PUBLIC_IP = "93.184.216.34"  # never contacted: the inner transport is a MockTransport


class Recorder:
    """The inner transport: records what would have been sent, answers from a script."""

    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or httpx.Response(200, content=b"ok")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer


def fixed_resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


def client(policy: EgressPolicy, recorder: Recorder, *, redirects: int = 0) -> httpx.Client:
    transport = GuardedTransport(policy, inner=httpx.MockTransport(recorder))
    return httpx.Client(transport=transport, follow_redirects=redirects > 0, max_redirects=max(redirects, 1))


SSRF_MATRIX = [
    pytest.param("http://127.0.0.1/", id="loopback"),
    pytest.param("http://2130706433/", id="decimal"),
    pytest.param("http://0x7f000001/", id="hex"),
    pytest.param("http://0177.0.0.1/", id="octal"),
    pytest.param("http://127.1/", id="short"),
    pytest.param("http://0/", id="zero"),
    pytest.param("http://[::1]/", id="ipv6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]/", id="ipv4-mapped"),
    pytest.param("http://[::ffff:a9fe:a9fe]/", id="ipv4-mapped-metadata"),
    pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata"),
    pytest.param("http://100.100.100.200/", id="cgnat-metadata"),
    pytest.param("http://10.0.0.1/", id="private"),
    pytest.param("http://192.168.1.1/", id="private-192"),
    pytest.param("file:///etc/passwd", id="file-scheme"),
    pytest.param("gopher://example.com/", id="gopher-scheme"),
    pytest.param("http://user:pass@example.com/", id="credentials"),
]


@pytest.mark.parametrize("url", SSRF_MATRIX)
def test_guard_refuses_the_ssrf_matrix_before_any_connection(url: str) -> None:
    recorder = Recorder()
    policy = EgressPolicy(resolver=fixed_resolver({"example.com": [PUBLIC_IP]}))

    with pytest.raises((EgressRefusedError, httpx.InvalidURL, httpx.UnsupportedProtocol)):
        client(policy, recorder).get(url)

    assert recorder.requests == []


@pytest.mark.parametrize("url", SSRF_MATRIX)
def test_submit_time_check_refuses_the_literal_part_of_the_matrix(url: str) -> None:
    reason = refusal_reason(url, EgressPolicy())

    assert reason is not None


def test_submit_time_check_accepts_a_public_url_and_names_local_ones() -> None:
    policy = EgressPolicy()

    assert refusal_reason("https://hooks.example.com/imagejobs", policy) is None
    assert refusal_reason("http://localhost:8080/hook", policy) == "points at this machine"


def test_a_name_resolving_to_loopback_is_refused() -> None:
    recorder = Recorder()
    policy = EgressPolicy(resolver=fixed_resolver({"evil.example": ["127.0.0.1"]}))

    with pytest.raises(EgressRefusedError, match="non-public"):
        client(policy, recorder).get("http://evil.example/")

    assert recorder.requests == []


def test_every_answer_must_be_public_not_just_the_first() -> None:
    recorder = Recorder()
    policy = EgressPolicy(resolver=fixed_resolver({"mixed.example": [PUBLIC_IP, "10.0.0.5"]}))

    with pytest.raises(EgressRefusedError):
        client(policy, recorder).get("http://mixed.example/")

    assert recorder.requests == []


def test_rebinding_between_calls_is_refused_and_the_checked_address_is_the_one_used() -> None:
    # Given a name whose DNS answer flips from public to loopback between calls
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])
    policy = EgressPolicy(resolver=lambda host, port: next(answers))
    recorder = Recorder()
    http = client(policy, recorder)

    # When it is requested twice
    http.get("https://rebind.example/hook")
    with pytest.raises(EgressRefusedError):
        http.get("https://rebind.example/hook")

    # Then the first request went to the checked address, keeping the name for Host and TLS SNI
    (sent,) = recorder.requests
    assert sent.url.host == PUBLIC_IP
    assert sent.headers["host"] == "rebind.example"
    assert sent.extensions["sni_hostname"] == "rebind.example"


def test_a_redirect_to_loopback_is_refused_at_the_next_hop() -> None:
    recorder = Recorder(httpx.Response(302, headers={"location": "http://127.0.0.1/admin"}))
    policy = EgressPolicy(resolver=fixed_resolver({"redirector.example": [PUBLIC_IP]}))

    with pytest.raises(EgressRefusedError):
        client(policy, recorder, redirects=3).get("http://redirector.example/image.png")

    assert [str(request.url) for request in recorder.requests] == [f"http://{PUBLIC_IP}/image.png"]


def test_without_redirects_a_3xx_is_returned_not_followed() -> None:
    recorder = Recorder(httpx.Response(302, headers={"location": "http://127.0.0.1/"}))
    policy = EgressPolicy(resolver=fixed_resolver({"hooks.example": [PUBLIC_IP]}))

    response = client(policy, recorder).post("http://hooks.example/", content=b"{}")

    assert response.status_code == 302
    assert len(recorder.requests) == 1


def test_operators_can_allow_list_networks_and_hosts() -> None:
    recorder = Recorder()
    policy = EgressPolicy.from_lists(hosts=["receiver.internal"], networks=["127.0.0.0/8"], resolver=fixed_resolver({}))
    http = client(policy, recorder)

    http.get("http://127.0.0.1:8080/hook")
    http.get("http://receiver.internal/hook")

    assert [request.url.host for request in recorder.requests] == ["127.0.0.1", "receiver.internal"]
    assert refusal_reason("http://127.0.0.1:8080/hook", policy) is None
    with pytest.raises(EgressRefusedError):
        http.get("http://169.254.169.254/")
