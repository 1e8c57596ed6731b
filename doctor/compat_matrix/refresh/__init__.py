"""`doctor matrix refresh`: the metadata facts of the matrix re-derived from the package index, without wheels.

One concept per module, in the order data flows:
  fetch       httpx with timeouts, retries with backoff, a concurrency limit, and the bytes it moved
  simple_api  a project's file list from the PEP 691 JSON (or PEP 503 HTML) simple API
  metadata    a wheel's METADATA from its PEP 658/714 `.metadata` file, checked against the advertised sha256
  lazy_wheel  members of a remote wheel by HTTP Range reads of its zip central directory (pip's lazy wheel)
  derive      the [xformers_torch] and [torch_triton] rows from what those read
  overlay     the user-level overlay file those rows are written to (atomically) and the loader reads

Contract: nothing here runs on `doctor check`'s path except overlay's reader (no httpx there); every network
failure is one RefreshFailed line naming the URL or file; the overlay is only replaced when every package
asked for was derived, so a failed refresh leaves the previous overlay as it was.
"""
