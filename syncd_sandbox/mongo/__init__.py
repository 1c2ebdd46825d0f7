"""MongoDB replica-set sandbox: a fake ``mongod`` in Python for tests and the demo.

**Dev/test only -- never a production option.** It speaks the real wire protocol so
pymongo (sync and async) runs against it unmodified, presents itself as the primary of
replica set ``rs0``, supports CRUD on mongomock, change streams with resume tokens, a
bounded oplog, optional persistence and fault injection. See ``docs/mongo-sandbox.md``.

Entry points:

* ``python -m syncd_sandbox.mongo --port 0 --data-dir DIR --ready-file F``
* :class:`MongoSandbox` (in-process, asyncio)
* :func:`start_sandbox_process` (subprocess, waits for readiness)
* :func:`send_fault` (trigger faults over the wire)
"""

from .faults import FAULT_KINDS, send_fault
from .process import SandboxProcess, start_sandbox_process
from .server import MongoSandbox

__all__ = ["FAULT_KINDS", "MongoSandbox", "SandboxProcess", "send_fault", "start_sandbox_process"]
