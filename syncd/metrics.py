"""Prometheus metrics. The names and labels are an interface: alerts and dashboards
in ``deploy/`` depend on them. Add new ones with the ``syncd_`` prefix; never rename.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)

# process_resident_memory_bytes (against the unit's MemoryMax=), process_start_time_seconds
# (restarts), process_open_fds, process_cpu_seconds_total: REGISTRY is not the default
# registry, so these would otherwise be missing from /metrics.
ProcessCollector(registry=REGISTRY)

EVENTS = Counter(
    "syncd_events_total",
    "Change events received.",
    ["collection", "operation"],
    registry=REGISTRY,
)
RECORDS_WRITTEN = Counter(
    "syncd_records_written_total",
    "Records written to the PDS.",
    ["collection", "action"],
    registry=REGISTRY,
)
WRITE_ERRORS = Counter(
    "syncd_write_errors_total",
    "Failed PDS writes (retried or not).",
    ["collection", "reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "syncd_dead_letters",
    "Documents currently dead-lettered.",
    ["collection"],
    registry=REGISTRY,
)
LAG = Gauge(
    "syncd_lag_seconds",
    "Seconds between now and the cluster time of the newest fully applied event "
    "(0 when caught up and idle).",
    registry=REGISTRY,
)
RESUME_TOKEN_AGE = Gauge(
    "syncd_resume_token_age_seconds",
    "Age of the saved resume position.",
    registry=REGISTRY,
)
BACKFILL_REMAINING = Gauge(
    "syncd_backfill_remaining",
    "Documents left in the current backfill (0 when none runs).",
    ["collection"],
    registry=REGISTRY,
)
PDS_REQUESTS = Counter(
    "syncd_pds_requests_total",
    "PDS requests by XRPC method and HTTP status (or error class).",
    ["method", "status"],
    registry=REGISTRY,
)
PDS_REQUEST_SECONDS = Histogram(
    "syncd_pds_request_seconds",
    "PDS request latency.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
#: State calls: from a local SQLite call (sub-millisecond) to a slow MongoDB round trip.
_STATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
STATE_CALL_SECONDS = Histogram(
    "syncd_state_call_seconds",
    "Time inside one state-store call (a MongoDB round trip, or a local SQLite call).",
    ["call"],
    buckets=_STATE_BUCKETS,
    registry=REGISTRY,
)
STATE_CALL_WAIT_SECONDS = Histogram(
    "syncd_state_call_wait_seconds",
    "Time a state-store call waited for the state thread (MongoDB state) before it ran.",
    buckets=_STATE_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "syncd_rate_limited_total",
    "HTTP 429 responses received from the PDS.",
    registry=REGISTRY,
)
BLOB_BYTES_UPLOADED = Counter(
    "syncd_blob_bytes_uploaded_total",
    "Blob bytes uploaded to the PDS.",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "syncd_queue_depth",
    "Items waiting in each bounded queue.",
    ["stage"],
    registry=REGISTRY,
)
STREAM_CONNECTED = Gauge(
    "syncd_stream_connected",
    "1 while the change stream is open.",
    registry=REGISTRY,
)
HISTORY_LOST = Counter(
    "syncd_history_lost_total",
    "Times the saved resume position had left the oplog.",
    registry=REGISTRY,
)

# Extra metrics (not in the original interface table).
SKIPPED = Counter(
    "syncd_skipped_total",
    "Documents not mirrored, by reason (no ATProto account, not public, ...).",
    ["collection", "reason"],
    registry=REGISTRY,
)
BLOBS_UPLOADED = Counter(
    "syncd_blobs_uploaded_total",
    "Blobs uploaded (a blob already on the PDS is never uploaded again).",
    registry=REGISTRY,
)
SESSIONS_CREATED = Counter(
    "syncd_sessions_created_total",
    "createSession calls (one per account per process, plus re-logins).",
    registry=REGISTRY,
)
LEADER = Gauge(
    "syncd_leader",
    "1 when this instance is the active writer (of its partition); 0 while it stands by.",
    registry=REGISTRY,
)
PARTITION = Gauge(
    "syncd_partition",
    "The cluster partition this instance leads; -1 while it stands by.",
    registry=REGISTRY,
)
PARTITIONS = Gauge(
    "syncd_partitions",
    "cluster.partitions of this instance's config (alert when sum(syncd_leader) is below it).",
    registry=REGISTRY,
)
LEASE_ACQUIRED = Counter(
    "syncd_lease_acquired_total",
    "Times this instance took a partition's lease (became its leader).",
    registry=REGISTRY,
)
SWAP_CONFLICTS = Counter(
    "syncd_swap_conflicts_total",
    "Fenced PDS writes refused with InvalidSwap (the repo moved since this instance last wrote).",
    registry=REGISTRY,
)
LEASE_LOST = Counter(
    "syncd_lease_lost_total",
    "Times this instance lost a lease it held (expired while paused, or fenced out).",
    registry=REGISTRY,
)
THUMBNAILS_MISSING = Counter(
    "syncd_thumbnails_missing_total",
    "Paintings published without a thumbnail because their image was missing at every key.",
    ["collection"],
    registry=REGISTRY,
)
WITHOUT_THUMBNAIL = Gauge(
    "syncd_paintings_without_thumbnail",
    "Painting records syncd holds that have no thumbnail (image missing when written).",
    registry=REGISTRY,
)
PARKED = Gauge(
    "syncd_parked_documents",
    "Documents waiting for an account that cannot write now (rate limit spent, credentials "
    "failing, refused by the PDS), by account and kind of reason.",
    ["account", "reason"],
    registry=REGISTRY,
)
REFUSED_KEYS = Counter(
    "syncd_refused_keys_total",
    "Record keys a document named (atproto.rkey) that belong to another document: ignored.",
    ["collection"],
    registry=REGISTRY,
)
OVERSIZED_EVENTS = Counter(
    "syncd_oversized_events_total",
    "Change events larger than MongoDB's 16 MiB limit, by how syncd got the document: "
    "'split' (reassembled from $changeStreamSplitLargeEvent fragments), 'read_directly' "
    "(the server could not send the event; the document was read by _id), 'dead_letter' "
    "(it could not be read either: dead-lettered as oversized_event).",
    ["collection", "handling"],
    registry=REGISTRY,
)
OVERSIZED_HANDLINGS = ("split", "read_directly", "dead_letter")
ACCOUNT_EVENTS = Counter(
    "syncd_account_events_total",
    "Account changes read from the platform's users collection, by what they were: "
    "appeared, recreated (a new DID), gone, credentials, handle, unchanged.",
    ["kind"],
    registry=REGISTRY,
)
ACCOUNT_EVENT_KINDS = ("appeared", "recreated", "gone", "credentials", "handle", "unchanged")
ACCOUNT_BACKFILLS = Gauge(
    "syncd_account_backfills",
    "Account backfills due or running (a user's documents published once their account "
    "appears or comes back).",
    registry=REGISTRY,
)
ACCOUNT_BACKFILL_REMAINING = Gauge(
    "syncd_account_backfill_remaining",
    "Documents the running account backfill has still to read (0 when none runs).",
    registry=REGISTRY,
)
ACCOUNT_BACKFILL_DOCUMENTS = Counter(
    "syncd_account_backfill_documents_total",
    "Documents routed by account backfills.",
    registry=REGISTRY,
)
ACCOUNTS_GONE = Gauge(
    "syncd_accounts_gone",
    "Accounts syncd no longer writes for (their documents are skips), by kind of reason: "
    "removed_from_users, replaced_by_new_did, refused (deleted, deactivated, taken down).",
    ["reason"],
    registry=REGISTRY,
)
BLOB_BYTES_SENT = Counter(
    "syncd_blob_bytes_sent_total",
    "Blob bytes streamed to uploadBlob, counted as they are sent: includes attempts that "
    "failed or were cut short (syncd_blob_bytes_uploaded_total counts completed uploads).",
    registry=REGISTRY,
)
BLOB_BYTES_IN_FLIGHT = Gauge(
    "syncd_blob_bytes_in_flight",
    "Bytes of streamed blobs (tape MP4s) being uploaded now (bounded by "
    "tapes.upload_bytes_in_flight).",
    registry=REGISTRY,
)
BLOB_UPLOADS_IN_FLIGHT = Gauge(
    "syncd_blob_uploads_in_flight",
    "Streamed blob (tape MP4) uploads in progress (bounded by tapes.upload_concurrency).",
    registry=REGISTRY,
)
BLOBS_PREPARED = Gauge(
    "syncd_blobs_prepared",
    "Streamed blobs (tape MP4s) spooled to disk and waiting for their record (bounded by "
    "tapes.prepared_max).",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "syncd_build_info",
    "Always 1; the version label says which syncd runs.",
    ["version"],
    registry=REGISTRY,
)


def initialise(collections: tuple[str, ...] | None = None) -> None:
    """Create the labelled children up front so every series exists from the first scrape."""
    from syncd import __version__
    from syncd.config import DEFAULT_COLLECTIONS
    from syncd.pds.errors import ERROR_REASONS

    collections = collections or DEFAULT_COLLECTIONS
    BUILD_INFO.labels(version=__version__).set(1)
    for coll in collections:
        DEAD_LETTERS.labels(collection=coll)
        REFUSED_KEYS.labels(collection=coll)
        THUMBNAILS_MISSING.labels(collection=coll)
        BACKFILL_REMAINING.labels(collection=coll).set(0)
        for action in ("create", "update", "delete"):
            RECORDS_WRITTEN.labels(collection=coll, action=action)
        for op in ("insert", "update", "replace", "delete"):
            EVENTS.labels(collection=coll, operation=op)
        for reason in ERROR_REASONS:
            WRITE_ERRORS.labels(collection=coll, reason=reason)
        for handling in OVERSIZED_HANDLINGS:
            OVERSIZED_EVENTS.labels(collection=coll, handling=handling)
    for kind in ACCOUNT_EVENT_KINDS:
        ACCOUNT_EVENTS.labels(kind=kind)
    for stage in ("source", "writer"):
        QUEUE_DEPTH.labels(stage=stage)
    LAG.set(0)
    STREAM_CONNECTED.set(0)
