"""GET / from a browser: one self-contained page (page.html, nothing from the network) to try the loaded task,
like the widgets on the hub's model pages. It calls this server's own POST / (with the API key the user
pastes, kept in the tab's sessionStorage, where the server has one).

A GET / that asks for JSON (an Accept that ranks application/json above text/html) is answered as before
the page existed: 405, the JSON API being POST /.
"""

# no `from __future__ import annotations`: FastAPI reads the handler's parameters from their annotations

import json
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .core import ApiError, Server
from .schemas import answers


def routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["page"])
    config = {"task": server.task, "mask_token": server.limits.mask_token, "key": server.limits.api_key}
    # the config goes into a <script type="application/json">: "</" would end that element early
    page = files(__package__).joinpath("page.html").read_text(encoding="utf-8").replace(
        "/*CONFIG*/null", json.dumps(config).replace("</", "<\\/"))
    responses = answers(server.limits, {"type": "string"}, 405, media="text/html", description="the page")

    @router.get("/", summary="A page to try the model, for a browser (Accept: text/html); no API key needed",
                response_class=HTMLResponse, responses=responses)
    async def try_it(request: Request):
        if not prefers_html(request.headers.get("accept")):
            refusal = ApiError(405, "Validation", "GET / is the page for a browser; the JSON API is POST / "
                               '(the Hugging Face Inference API): {"inputs": ...}')
            return JSONResponse(refusal.body(), 405, headers={"Allow": "POST"})  # for JSON, / is POST alone
        return HTMLResponse(page)

    return router


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html at least as high as application/json: by quality, then by how
    exactly it names the type (a browser's "text/html, ..., */*;q=0.8": yes; "*/*" or none: yes;
    "application/json, text/plain, */*": no)."""
    ranges: dict[str, float] = {}
    for part in (accept or "*/*").split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = next((p.partition("=")[2] for p in params if p.partition("=")[0].strip() == "q"), "1")
        try:
            ranges[media.lower()] = max(ranges.get(media.lower(), 0.0), float(q))
        except ValueError:
            continue

    def rank(media: str) -> tuple[float, int]:
        for specificity, name in ((2, media), (1, media.split("/")[0] + "/*"), (0, "*/*")):
            if name in ranges:
                return ranges[name], specificity
        return 0.0, 0

    html = rank("text/html")
    return html[0] > 0 and html >= rank("application/json")
