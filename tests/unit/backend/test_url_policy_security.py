"""The pure image-URL policy under adversarial input (no I/O).

- metadata addresses are refused in every spelling the OS resolver accepts (decimal, hex,
  octal, short forms, IPv4-mapped IPv6), also for presigned cloud redirects, which may otherwise
  go to any public https host;
- a property: whatever string a task holds, the policy either refuses it or names a source on
  Label Studio's host / an allowed host, and the token is only ever attached for Label Studio.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import image_urls
from backend.image_download import ImageFetchError, check_presigned_target
from backend.image_urls import ImageURLRefused, check_fetch_allowed, host_key, resolve_image_source

LS = "http://127.0.0.1:8080"
ALLOWED = ("images.example.org", "127.0.0.2:9000")

METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "0xa9.0xfe.0xa9.0xfe",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[fe80::1]",
    "[fd00:ec2::254]",
    "100.100.100.200",
    "metadata.google.internal",
    "METADATA.google.internal.",
    "169.254.169.254.",
    "0.0.0.0",
    "0",
    "[::]",
    "224.0.0.1",
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_addresses_are_refused_in_every_spelling(host):
    assert image_urls.is_link_local_or_metadata(host.strip("[]")) or image_urls.is_link_local_or_metadata(
        host
    )
    with pytest.raises(ImageURLRefused):
        check_fetch_allowed(f"http://{host}/latest/meta-data/", LS, (host, f"{host}:80"))
    with pytest.raises(ImageFetchError):
        check_presigned_target(f"https://{host}/latest/meta-data/")


@pytest.mark.parametrize(
    "host",
    [
        "s3.amazonaws.com",
        "storage.googleapis.com",
        "8.8.8.8",
        "example.blob.core.windows.net",
        "[2001:db8::1]",
    ],
)
def test_public_https_presign_targets_are_fetched_without_the_token(host):
    assert check_presigned_target(f"https://{host}/bucket/key.png?X-Amz-Signature=abc") is False


def test_presign_targets_must_be_https():
    with pytest.raises(ImageFetchError, match="https"):
        check_presigned_target("http://s3.amazonaws.com/bucket/key.png")


def test_private_but_not_link_local_hosts_are_not_mistaken_for_metadata():
    for host in ("127.0.0.1", "10.0.0.5", "192.168.1.10", "images.example.org", "1.2.3.4"):
        assert not image_urls.is_link_local_or_metadata(host)


url_parts = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTP://",
        "//",
        "/",
        "file://",
        "data:",
        "s3://",
        "gs://",
        "ftp://",
        "127.0.0.1",
        "127.0.0.2",
        ":8080",
        ":9000",
        ":99999",
        ":x",
        "[",
        "]",
        "@",
        "\\",
        "#",
        "?",
        "%2F",
        "%40",
        "..",
        "/data/upload/1/",
        "/data/local-files/?d=",
        "images.example.org",
        "169.254.169.254",
        "[::1]",
        "\t",
        " ",
        "x.png",
    ]
)
task_urls = st.one_of(st.lists(url_parts, max_size=8).map("".join), st.text(max_size=60))


@settings(max_examples=3000, deadline=None, database=None)
@given(raw=task_urls)
def test_any_task_url_is_refused_or_goes_only_where_allowed(raw):
    try:
        source = resolve_image_source(raw, task_id=3, label_studio_url=LS, allowed_hosts=ALLOWED)
    except ImageURLRefused:  # a malformed URL (bad port, broken IPv6) too: never a bare ValueError
        return
    if source.kind in ("data_uri", "local_file"):
        assert not source.send_auth
        return
    parts = urlsplit(source.url)
    assert parts.scheme in ("http", "https")
    allowed_keys = {host_key(LS), "images.example.org:80", "images.example.org:443", "127.0.0.2:9000"}
    assert host_key(source.url) in allowed_keys, (raw, source)
    if source.send_auth:
        assert host_key(source.url) == host_key(LS), (raw, source)
    # what urllib3 (the HTTP client actually used) will connect to is the same host
    from urllib3.util import parse_url

    target = parse_url(source.url)
    assert (
        f"{(target.host or '').strip('[]').lower()}:{target.port or {'http': 80, 'https': 443}[target.scheme]}"
        == host_key(source.url).replace("[", "").replace("]", "")
    ), (raw, source.url)


@pytest.mark.parametrize(
    "raw",
    [
        "http://images.example.org\t/data/upload/1/",
        "http://images.exam\nple.org/x.png",
        "/data/upload/1/\r\nx.png",
    ],
)
def test_tabs_and_newlines_are_dropped_before_the_check_so_the_checked_url_is_the_fetched_one(raw):
    # URL parsers drop them (so the check saw a clean host) but the HTTP client refuses a host
    # holding them: found by the property above. The fetched URL is the checked one, without them.
    from urllib3.util import parse_url

    source = resolve_image_source(raw, task_id=3, label_studio_url=LS, allowed_hosts=ALLOWED)
    assert not any(c in source.url for c in "\t\r\n")
    assert host_key(source.url) in {host_key(LS), "images.example.org:80"}
    assert parse_url(source.url).host in ("images.example.org", "127.0.0.1")
