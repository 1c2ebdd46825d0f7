import io
import json

import structlog

from syncd import logs
from syncd.logs import register_secret_from_uri

JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkaWQ6cGxjOnh5eiIsImV4cCI6MTcwMDAwMDAwMH0.c2lnbmF0dXJlLWJ5dGVz"
)


def test_redacts_jwts_uri_passwords_and_registered_secrets() -> None:
    logs.register_secret("hunter2-very-secret")
    register_secret_from_uri("mongodb://syncd:p%40ss-w0rd-xyz@db:27017/?replicaSet=rs0")
    out = io.StringIO()
    logs.configure("debug", "json", stream=out)
    log = structlog.get_logger("t")
    log.info(
        "event",
        header=f"Bearer {JWT}",
        uri="mongodb://syncd:p%40ss-w0rd-xyz@db:27017/",
        detail="login with hunter2-very-secret failed",
        password="anything",
        nested={"accessJwt": "x", "note": ["p@ss-w0rd-xyz"]},
    )
    line = out.getvalue()
    for secret in (JWT, "p%40ss-w0rd-xyz", "p@ss-w0rd-xyz", "hunter2-very-secret", "anything"):
        assert secret not in line
    data = json.loads(line)
    assert data["uri"] == "mongodb://[redacted]@db:27017/"
    assert data["event"] == "event" and data["level"] == "info"


def test_redact_function() -> None:
    assert logs.redact(f"token {JWT} end") == "token [redacted] end"


def test_userinfo_of_any_url_is_redacted() -> None:
    for url, want in [
        ("https://admin:s3cret-pw@pds.example.com/xrpc", "https://[redacted]@pds.example.com/xrpc"),
        ("http://user@127.0.0.1:2583", "http://[redacted]@127.0.0.1:2583"),
        (
            "mongodb+srv://u:p@a@cluster0.example.net/db",
            "mongodb+srv://[redacted]@cluster0.example.net/db",
        ),
    ]:
        assert logs.redact(f"pds={url} ok") == f"pds={want} ok"
    # No userinfo: left alone (an @ in the path is not userinfo).
    for text in (
        "https://aesthetic.computer/@jeffrey/painting/x.png",
        "a@b.c mail",
        "at://did:plc:x/c/r",
    ):
        assert logs.redact(text) == text


def test_account_passwords_are_registered_as_they_are_loaded() -> None:
    from syncd.accounts import AccountResolver

    password = "account-pw-9f8e7d"
    account, _ = AccountResolver._account(
        "auth0|x", {"_id": "auth0|x", "atproto": {"did": "did:plc:x", "password": password}}
    )
    assert account is not None
    assert logs.redact(f"login failed for {password}") == "login failed for [redacted]"
