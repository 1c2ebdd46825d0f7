"""Writing to the PDS, one writer per account, split along its seams.

* :mod:`syncd.write.queue` -- ordering: per document, in order; latest state wins;
* :mod:`syncd.write.images` -- painting images prepared ahead of their batch;
* :mod:`syncd.write.blobs` -- which blobs an account has, uploads;
* :mod:`syncd.write.records` -- records built, thumbnails attached, lexicons checked;
* :mod:`syncd.write.sender` -- ``applyWrites`` batches, the write budget, 429s, the
  fallback to idempotent single calls, checks of keys documents name;
* :mod:`syncd.write.commit` -- the pending marks and the results, as state operations;
* :mod:`syncd.write.writeback` -- ``atproto`` back-references in MongoDB;
* :mod:`syncd.write.account` -- :class:`AccountWriter`, the loop that ties them.
"""

from syncd.write.account import AccountWriter, WriterDeps

__all__ = ["AccountWriter", "WriterDeps"]
