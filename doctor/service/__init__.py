"""The resolution service (`doctor serve`, extra `serve`) and its client (`--service URL`).

schema: the request document, what it may and may not carry, and its validation (pure Python + packaging:
        the client and the server share it, and neither needs FastAPI for it).
answer: what the service computes for one request, from the matrix alone (no FastAPI either).
app:    the FastAPI application (create_app); metrics and logs are its Prometheus text and JSON lines.
client: httpx, short timeouts, one retry, the answer validated and re-parsed; any failure is a fallback.
"""
