"""Large blobs streamed, never held: a tape's MP4 (up to 50 MB) on its way to the PDS.

* :mod:`syncd.media.spool` -- the bytes on disk (an anonymous temporary file), hashed
  while written, so the blob's CID is known before anything is uploaded;
* :mod:`syncd.media.fetch` -- the MP4 fetched with the image fetcher's defences
  (allowed origins only, redirects checked before they are followed), its type and
  size checked against the lexicon and the PDS's upload limit;
* :mod:`syncd.media.limits` -- the PDS's upload limit (configured, or learned from its
  413 answers) and the bound on bytes uploaded at once.

The writer's side (prepared ahead of the batch, uploaded with bounded concurrency
apart from the text writes) is :mod:`syncd.write.streamed`.
"""
