"""The Python-hop ceiling: a FastAPI auth endpoint that allows everything without looking.

Served by uvicorn exactly like the gate (one worker, no access log), behind the same NGINX
template, so the gate's row and this one differ only in what the endpoint does.
"""

from __future__ import annotations

from fastapi import FastAPI, Response

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/_gate/check")
async def check() -> Response:
    return Response(status_code=200)
