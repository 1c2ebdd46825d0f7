import io
import json

import structlog

from syncd import logs
from syncd.engine import register_secret_from_uri

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
    assert data["uri"] == "mongodb://syncd:[redacted]@db:27017/"
    assert data["event"] == "event" and data["level"] == "info"


def test_redact_function() -> None:
    assert logs.redact(f"token {JWT} end") == "token [redacted] end"
