"""Facts about the sandbox PDS (@atproto/pds 0.4.217) that syncd depends on, pinned.

See /work/shared/reference/pds-facts.md. If one of these fails after a PDS or
SDK upgrade, syncd's assumptions must be revisited, not just this test.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from atproto import Client, Session, models
from atproto_client.exceptions import BadRequestError

from syncd_sandbox.pds import Account, PdsApi, PdsError, PdsHandle, new_tid, unique_handle
from syncd_sandbox.seed import png_bytes

NSID = "computer.aesthetic.mood"


@pytest.fixture
def api(sandbox_pds: PdsHandle) -> Iterator[PdsApi]:
    with sandbox_pds.api() as api:
        yield api


@pytest.fixture
def account(api: PdsApi) -> Account:
    return api.create_account(unique_handle("pdsfact"))


def _create(rkey: str, text: str = "hi") -> dict[str, Any]:
    return {
        "$type": "com.atproto.repo.applyWrites#create",
        "collection": NSID,
        "rkey": rkey,
        "value": {"$type": NSID, "mood": text, "when": "2025-03-01T12:00:00.000Z", "ref": "x"},
    }


def _xrpc(api: PdsApi, acct: Account, method: str, body: dict[str, Any]) -> httpx.Response:
    return api.http.post(
        f"/xrpc/{method}", json=body, headers={"Authorization": f"Bearer {acct.access_jwt}"}
    )


def _local_blob_cid(data: bytes) -> str:
    """CIDv1, raw codec (0x55), sha2-256 (0x12, 32 bytes), base32 lower-case, 'b' prefix."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def test_create_account_returns_plc_did_and_tokens(api: PdsApi) -> None:
    handle = unique_handle("newbie")
    acct = api.create_account(handle)
    assert acct.did.startswith("did:plc:")
    assert acct.handle == handle
    assert acct.access_jwt and acct.refresh_jwt
    # Emails must be unique.
    with pytest.raises(PdsError) as exc:
        api.create_account(unique_handle("newbie"), email=acct.email)
    assert exc.value.status == 400


def test_sdk_session_without_app_view_profile_fetch(
    sandbox_pds: PdsHandle, account: Account
) -> None:
    # Plain login() also calls app.bsky.actor.getProfile, which this PDS cannot serve.
    with pytest.raises(BadRequestError):
        Client(base_url=sandbox_pds.url).login(account.handle, account.password)

    # Either pass fetch_bsky_profile=False ...
    client = Client(base_url=sandbox_pds.url)
    profile = client.login(account.handle, account.password, fetch_bsky_profile=False)
    assert profile is None
    assert client.me is None

    # ... or call createSession directly and give the client the tokens as a session string
    # (importing a session string makes no call; no profile fetch with the flag).
    client2 = Client(base_url=sandbox_pds.url)
    session = client2.com.atproto.server.create_session(
        models.ComAtprotoServerCreateSession.Data(identifier=account.did, password=account.password)
    )
    assert session.did == account.did
    exported = Session(
        session.handle, session.did, session.access_jwt, session.refresh_jwt, sandbox_pds.url
    )
    assert client2.login(session_string=exported.encode(), fetch_bsky_profile=False) is None

    # The SDK writes a custom NSID when validate is left unset.
    for c in (client, client2):
        out = c.com.atproto.repo.create_record(
            models.ComAtprotoRepoCreateRecord.Data(
                repo=account.did,
                collection=NSID,
                rkey=new_tid(),
                record={"$type": NSID, "mood": "sdk", "when": "2025-03-01T12:00:00.000Z"},
            )
        )
        assert out.validation_status == "unknown"


def test_apply_writes_limit_is_200(api: PdsApi, account: Account) -> None:
    ok = _xrpc(
        api,
        account,
        "com.atproto.repo.applyWrites",
        {"repo": account.did, "writes": [_create(new_tid()) for _ in range(200)]},
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert set(body["commit"]) >= {"cid", "rev"}
    assert len(body["results"]) == 200
    assert all(r["uri"].startswith(f"at://{account.did}/{NSID}/") for r in body["results"])
    assert body["results"][0]["validationStatus"] == "unknown"

    too_many = _xrpc(
        api,
        account,
        "com.atproto.repo.applyWrites",
        {"repo": account.did, "writes": [_create(new_tid()) for _ in range(201)]},
    )
    assert too_many.status_code == 400
    assert len(api.list_records(account.did, NSID)) == 200


def test_apply_writes_create_on_existing_key_fails_whole_batch_with_500(
    api: PdsApi, account: Account
) -> None:
    existing = new_tid()
    api.apply_writes(account.access_jwt, account.did, [_create(existing, "original")])
    fresh = [new_tid() for _ in range(3)]
    resp = _xrpc(
        api,
        account,
        "com.atproto.repo.applyWrites",
        {
            "repo": account.did,
            "writes": [
                _create(fresh[0]),
                _create(existing, "dup"),
                _create(fresh[1]),
                _create(fresh[2]),
            ],
        },
    )
    assert resp.status_code == 500
    assert resp.json()["error"] == "InternalServerError"
    # Nothing of the batch was applied, and the existing record is untouched.
    records = api.list_records(account.did, NSID)
    assert [r["uri"].rsplit("/", 1)[1] for r in records] == [existing]
    assert records[0]["value"]["mood"] == "original"


def test_apply_writes_update_or_delete_of_missing_key_fails_with_500(
    api: PdsApi, account: Account
) -> None:
    for op in ("update", "delete"):
        write: dict[str, Any] = {
            "$type": f"com.atproto.repo.applyWrites#{op}",
            "collection": NSID,
            "rkey": new_tid(),
        }
        if op == "update":
            write["value"] = {"$type": NSID, "mood": "x", "when": "2025-03-01T12:00:00.000Z"}
        resp = _xrpc(
            api,
            account,
            "com.atproto.repo.applyWrites",
            {"repo": account.did, "writes": [_create(new_tid()), write]},
        )
        assert resp.status_code == 500, op
    assert api.list_records(account.did, NSID) == []


def test_one_commit_that_writes_and_deletes_identical_records_loses_the_written_one(
    api: PdsApi, account: Account
) -> None:
    """Found running syncd beside the platform's writers: moving a document's record onto
    the key the platform picked writes content identical to the record it replaces. In
    one applyWrites (either order) the written record's block goes with the deleted
    one: getRecord no longer finds it, the MST still has the key, and a later putRecord
    there fails with a 500 ("There is already a value at key"). In two commits both
    records behave. syncd therefore deletes a moved record in a second commit."""
    base = {"$type": NSID, "when": "2025-03-01T12:00:00.000Z", "ref": "r"}

    def pair(text: str) -> tuple[str, str, dict[str, Any]]:
        named, mine, value = new_tid(), new_tid(), dict(base, mood=text)
        other = dict(base, mood=f"the platform's {text}")
        writes = [{**_create(named), "value": other}, {**_create(mine), "value": value}]
        body = {"repo": account.did, "writes": writes}
        resp = _xrpc(api, account, "com.atproto.repo.applyWrites", body)
        assert resp.status_code == 200, resp.text
        return named, mine, value

    def update(rkey: str, value: dict[str, Any]) -> dict[str, Any]:
        op = "com.atproto.repo.applyWrites#update"
        return {"$type": op, "collection": NSID, "rkey": rkey, "value": value}

    def delete(rkey: str) -> dict[str, Any]:
        return {"$type": "com.atproto.repo.applyWrites#delete", "collection": NSID, "rkey": rkey}

    for order in ("update first", "delete first"):
        named, mine, value = pair(order)
        writes = [update(named, value), delete(mine)]
        if order == "delete first":
            writes.reverse()
        body = {"repo": account.did, "writes": writes}
        assert _xrpc(api, account, "com.atproto.repo.applyWrites", body).status_code == 200
        assert api.get_record(account.did, NSID, named) is None, order  # lost
        put = {"repo": account.did, "collection": NSID, "rkey": named, "record": value}
        assert _xrpc(api, account, "com.atproto.repo.putRecord", put).status_code == 500, order
    named, mine, value = pair("two commits")
    for write in (update(named, value), delete(mine)):
        body = {"repo": account.did, "writes": [write]}
        assert _xrpc(api, account, "com.atproto.repo.applyWrites", body).status_code == 200
    got = api.get_record(account.did, NSID, named)
    assert got is not None and got["value"] == value
    assert api.get_record(account.did, NSID, mine) is None


def test_put_record_upserts_and_delete_is_idempotent(api: PdsApi, account: Account) -> None:
    rkey = new_tid()
    value = {"$type": NSID, "mood": "put", "when": "2025-03-01T12:00:00.000Z", "ref": "r1"}
    body = {"repo": account.did, "collection": NSID, "rkey": rkey, "record": value}

    created = _xrpc(api, account, "com.atproto.repo.putRecord", body)
    assert created.status_code == 200, created.text
    assert "commit" in created.json()
    assert api.get_record(account.did, NSID, rkey) is not None

    # Identical content: nothing committed (no `commit` in the reply).
    same = _xrpc(api, account, "com.atproto.repo.putRecord", body)
    assert same.status_code == 200
    assert "commit" not in same.json()
    assert same.json()["cid"] == created.json()["cid"]

    delete = {"repo": account.did, "collection": NSID, "rkey": rkey}
    assert _xrpc(api, account, "com.atproto.repo.deleteRecord", delete).status_code == 200
    assert api.get_record(account.did, NSID, rkey) is None
    # Deleting a missing key is a 200 too.
    again = _xrpc(api, account, "com.atproto.repo.deleteRecord", delete)
    assert again.status_code == 200


def test_get_record_missing_is_400_record_not_found(api: PdsApi, account: Account) -> None:
    resp = api.http.get(
        "/xrpc/com.atproto.repo.getRecord",
        params={"repo": account.did, "collection": NSID, "rkey": new_tid()},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "RecordNotFound"


def test_upload_blob_is_content_addressed(api: PdsApi, account: Account) -> None:
    data = png_bytes(40, 30, seed=7)
    first = api.upload_blob(account.access_jwt, data)
    second = api.upload_blob(account.access_jwt, data)
    assert first["$type"] == "blob"
    assert first["mimeType"] == "image/png"
    assert first["size"] == len(data)
    assert first["ref"]["$link"] == second["ref"]["$link"] == _local_blob_cid(data)
    # Referenced from a record, it can be read back.
    rkey = new_tid()
    record = {"$type": NSID, "mood": "with blob", "when": "2025-03-01T12:00:00.000Z", "pic": first}
    put = _xrpc(
        api,
        account,
        "com.atproto.repo.putRecord",
        {"repo": account.did, "collection": NSID, "rkey": rkey, "record": record},
    )
    assert put.status_code == 200, put.text
    assert api.get_blob(account.did, first["ref"]["$link"]) == data
    assert first["ref"]["$link"] in api.list_blobs(account.did)


def test_list_records_pages_through_everything(api: PdsApi, account: Account) -> None:
    keys = [new_tid() for _ in range(250)]
    api.apply_writes(account.access_jwt, account.did, [_create(k) for k in keys[:200]])
    api.apply_writes(account.access_jwt, account.did, [_create(k) for k in keys[200:]])

    first = api.query(
        "com.atproto.repo.listRecords", {"repo": account.did, "collection": NSID, "limit": 100}
    )
    assert len(first["records"]) == 100 and first["cursor"]
    # No auth needed, limit <= 100, every record exactly once.
    records = api.list_records(account.did, NSID)
    assert sorted(r["uri"].rsplit("/", 1)[1] for r in records) == sorted(keys)
    assert api.collections(account.did) == [NSID]


def test_admin_takedown_blocks_sessions_until_reversed(api: PdsApi, account: Account) -> None:
    api.takedown(account.did)
    assert api.subject_status(account.did)["takedown"]["applied"] is True
    with pytest.raises(PdsError) as exc:
        api.create_session(account.handle, account.password)
    assert (exc.value.status, exc.value.error) == (401, "AccountTakedown")
    api.takedown(account.did, applied=False)
    assert api.create_session(account.handle, account.password)["did"] == account.did


def test_deactivated_account_refuses_writes_until_activated(api: PdsApi, account: Account) -> None:
    api.deactivate_account(account.access_jwt)
    assert api.subject_status(account.did)["deactivated"]["applied"] is True
    with pytest.raises(PdsError) as exc:
        api.apply_writes(account.access_jwt, account.did, [_create(new_tid())])
    assert (exc.value.status, exc.value.error) == (401, "AccountDeactivated")
    api.activate_account(account.access_jwt)
    api.apply_writes(account.access_jwt, account.did, [_create(new_tid())])


def test_admin_calls_need_the_admin_password(sandbox_pds: PdsHandle, account: Account) -> None:
    with PdsApi(sandbox_pds.url, admin_password="wrong") as bad, pytest.raises(PdsError) as exc:
        bad.account_info(account.did)
    assert exc.value.status == 401


def test_pds_restart_keeps_accounts_and_records(
    sandbox_pds_process: Any, api: PdsApi, account: Account
) -> None:
    rkey = new_tid()
    api.apply_writes(account.access_jwt, account.did, [_create(rkey)])
    url = sandbox_pds_process.handle.url
    sandbox_pds_process.restart()
    assert sandbox_pds_process.handle.url == url
    # Same data, same PLC directory contents (the DID still resolves), tokens still valid.
    assert api.get_record(account.did, NSID, rkey) is not None
    plc = httpx.get(f"{sandbox_pds_process.handle.plc_url}/{account.did}")
    assert plc.status_code == 200 and plc.json()["id"] == account.did
    api.apply_writes(account.access_jwt, account.did, [_create(new_tid())])
    assert api.create_session(account.handle, account.password)["did"] == account.did


def test_rate_limited_pds_refuses_the_31st_create_session(rate_limited_pds: PdsHandle) -> None:
    with rate_limited_pds.api() as api:
        acct = api.create_account(unique_handle("burst"))
        statuses = []
        last: httpx.Response | None = None
        for _ in range(31):
            last = api.http.post(
                "/xrpc/com.atproto.server.createSession",
                json={"identifier": acct.handle, "password": acct.password},
            )
            statuses.append(last.status_code)
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429
    assert last is not None
    assert last.json()["error"] == "RateLimitExceeded"
    headers = last.headers
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy"):
        assert name in headers, name
    assert headers["ratelimit-limit"] == "30"
    assert headers["ratelimit-remaining"] == "0"
    assert headers["ratelimit-policy"] == "30;w=300"
    # This PDS sends no Retry-After for its own limits: use ratelimit-reset (Unix seconds).
    assert "retry-after" not in headers
    assert int(headers["ratelimit-reset"]) > time.time()


def test_rate_limited_pds_write_budget_is_5000_points_per_hour(
    rate_limited_pds: PdsHandle,
) -> None:
    with rate_limited_pds.api() as api:
        acct = api.create_account(unique_handle("budget"))
        policies = []
        for _ in range(8):  # 8 x 200 creates x 3 points = 4800 of 5000
            resp = _xrpc(
                api,
                acct,
                "com.atproto.repo.applyWrites",
                {"repo": acct.did, "writes": [_create(new_tid()) for _ in range(200)]},
            )
            assert resp.status_code == 200, resp.text
            policies.append(resp.headers["ratelimit-policy"])
        # Headers describe whichever limit is closest to running out: first the global
        # per-IP one, then the per-account write budget.
        assert policies[0] == "3000;w=300"
        assert policies[-1] == "5000;w=3600"
        assert resp.headers["ratelimit-remaining"] == "200"
        # Knowing the remaining points, a batch that fits still passes (66 x 3 = 198) ...
        fits = _xrpc(
            api,
            acct,
            "com.atproto.repo.applyWrites",
            {"repo": acct.did, "writes": [_create(new_tid()) for _ in range(66)]},
        )
        assert fits.status_code == 200, fits.text
        assert fits.headers["ratelimit-remaining"] == "2"
        # ... and the next one is refused as a whole.
        refused = _xrpc(
            api,
            acct,
            "com.atproto.repo.applyWrites",
            {"repo": acct.did, "writes": [_create(new_tid())]},
        )
        assert refused.status_code == 429
        assert refused.json()["error"] == "RateLimitExceeded"
        assert refused.headers["ratelimit-policy"] == "5000;w=3600"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert int(refused.headers["ratelimit-reset"]) > time.time() + 3000
        assert "retry-after" not in refused.headers
        assert len(api.list_records(acct.did, NSID)) == 1666


def test_rate_limit_headers_on_ordinary_responses(rate_limited_pds: PdsHandle) -> None:
    resp = httpx.get(f"{rate_limited_pds.url}/xrpc/com.atproto.server.describeServer")
    assert resp.status_code == 200
    assert resp.headers["ratelimit-policy"] == "3000;w=300"


def test_unlimited_pds_sends_no_rate_limit_headers(sandbox_pds: PdsHandle) -> None:
    resp = httpx.get(f"{sandbox_pds.url}/xrpc/com.atproto.server.describeServer")
    assert resp.status_code == 200
    assert "ratelimit-limit" not in resp.headers


def test_short_write_window_for_tests(short_window_pds: Any) -> None:
    """``launch.mjs --rate-limit-window-seconds 12``: the same 5,000 points, a 12 s window
    that says so in its policy, and the budget is whole again after the reset."""
    handle: PdsHandle = short_window_pds(12).handle
    assert handle.rate_limit_window == 12
    with handle.api() as api:
        acct = api.create_account(unique_handle("window"))

        def send(n: int) -> httpx.Response:
            body = {"repo": acct.did, "writes": [_create(new_tid()) for _ in range(n)]}
            return _xrpc(api, acct, "com.atproto.repo.applyWrites", body)

        for _ in range(8):  # 4800 of 5000 points
            resp = send(200)
            assert resp.status_code == 200, resp.text
        assert resp.headers["ratelimit-policy"] == "5000;w=12"
        assert resp.headers["ratelimit-remaining"] == "200"
        refused = send(200)  # 600 points: refused whole
        assert refused.status_code == 429
        assert refused.headers["ratelimit-policy"] == "5000;w=12"
        reset = int(refused.headers["ratelimit-reset"])
        assert time.time() < reset <= time.time() + 13
        # A refused call's points are counted too: what was left no longer pays for 66.
        assert send(66).status_code == 429
        time.sleep(max(0.0, reset - time.time()) + 1.5)
        again = send(200)
        assert again.status_code == 200, again.text  # (its headers: the per-IP limit now)
        assert len(api.list_records(acct.did, NSID)) == 1800


def test_a_deleted_account_answers_account_not_found_and_no_session(
    api: PdsApi, account: Account
) -> None:
    """What syncd meets after the platform deleted an account (syncd/lifecycle.py): a write
    with a session made before answers 403 ``AccountNotFound`` (syncd: the account is
    gone); a refresh answers 400 (a dead session, not a retryable error); a login answers
    401 ``AuthenticationRequired`` (as a wrong password does); the repository is not there."""
    api.apply_writes(account.access_jwt, account.did, [_create(new_tid())])
    api.delete_account(account.did)
    with pytest.raises(PdsError) as exc:
        api.apply_writes(account.access_jwt, account.did, [_create(new_tid())])
    assert (exc.value.status, exc.value.error) == (403, "AccountNotFound")
    with pytest.raises(PdsError) as exc:
        api.procedure("com.atproto.server.refreshSession", None, token=account.refresh_jwt)
    assert exc.value.status == 400
    with pytest.raises(PdsError) as exc:
        api.create_session(account.did, account.password)
    assert (exc.value.status, exc.value.error) == (401, "AuthenticationRequired")
    with pytest.raises(PdsError) as exc:
        api.query("com.atproto.sync.getRepoStatus", {"did": account.did})
    assert exc.value.status == 400


def test_repo_status_says_whether_an_account_is_active(api: PdsApi, account: Account) -> None:
    """``com.atproto.sync.getRepoStatus`` (no auth): how syncd looks, hourly, whether an
    account the PDS refused is active again."""
    assert api.query("com.atproto.sync.getRepoStatus", {"did": account.did})["active"] is True
    api.takedown(account.did)
    status = api.query("com.atproto.sync.getRepoStatus", {"did": account.did})
    assert status["active"] is False and status["status"] == "takendown"
    api.takedown(account.did, applied=False)
    api.deactivate_account(account.access_jwt)
    status = api.query("com.atproto.sync.getRepoStatus", {"did": account.did})
    assert status["active"] is False and status["status"] == "deactivated"
    api.activate_account(account.access_jwt)
    assert api.query("com.atproto.sync.getRepoStatus", {"did": account.did})["active"] is True
