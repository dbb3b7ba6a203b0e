"""The composition root: ``create_app()`` builds the shared knobs, both dialects and their routes.

Both upstreams use ``POST /v1/images/generations``. Unambiguous prefixed copies exist
(``/kling/v1/...`` and ``/openai/v1/...``); on the shared root path the request is routed by its
credentials: the configured OpenAI key → OpenAI; a JWT-shaped bearer token → Kling; otherwise a JSON
body with ``model_name`` → Kling; anything else → OpenAI. ``GET /v1/images/generations[/{id}]`` is
Kling's and ``POST /v1/images/edits`` OpenAI's.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request, Response

from emulator.ark.routes import ArkEmulator
from emulator.bfl.routes import RESULT_TTL_S, BflEmulator
from emulator.callbacks import CallbackSender
from emulator.gemini.routes import GeminiEmulator
from emulator.kling.routes import PATH, KlingEmulator
from emulator.knobs import Knobs, build_knobs_router
from emulator.openai.images import OpenAIEmulator
from emulator.relay.routes import RelayEmulator

DEFAULT_KLING_ACCESS_KEY = "emulator-ak"
DEFAULT_KLING_SECRET_KEY = "emulator-kling-secret-key-local-only"
DEFAULT_OPENAI_API_KEY = "emulator-openai-key"
DEFAULT_GEMINI_API_KEY = "emulator-gemini-key"
DEFAULT_ARK_API_KEY = "emulator-ark-key"
DEFAULT_BFL_API_KEY = "emulator-bfl-key"
DEFAULT_RELAY_API_KEY = "emulator-relay-key"


async def _wants_kling(request: Request, openai_key: str) -> bool:
    _, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if token == openai_key:
        return False
    if token.count(".") == 2:
        return True
    try:
        body = json.loads(await request.body())  # Starlette caches the body for the handler
    except ValueError:
        return False
    return isinstance(body, dict) and "model_name" in body


def create_app() -> FastAPI:
    """A fresh emulator with its own state; credentials come from the environment (see README)."""
    knobs = Knobs()
    callbacks = CallbackSender(knobs)
    kling = KlingEmulator(
        knobs,
        access_key=os.environ.get("EMULATOR_KLING_ACCESS_KEY", DEFAULT_KLING_ACCESS_KEY),
        secret_key=os.environ.get("EMULATOR_KLING_SECRET_KEY", DEFAULT_KLING_SECRET_KEY),
        callbacks=callbacks,
    )
    openai = OpenAIEmulator(knobs, api_key=os.environ.get("EMULATOR_OPENAI_API_KEY", DEFAULT_OPENAI_API_KEY))
    gemini = GeminiEmulator(knobs, api_key=os.environ.get("EMULATOR_GEMINI_API_KEY", DEFAULT_GEMINI_API_KEY))
    ark = ArkEmulator(knobs, api_key=os.environ.get("EMULATOR_ARK_API_KEY", DEFAULT_ARK_API_KEY))
    bfl = BflEmulator(
        knobs,
        api_key=os.environ.get("EMULATOR_BFL_API_KEY", DEFAULT_BFL_API_KEY),
        result_ttl_s=float(os.environ.get("EMULATOR_BFL_RESULT_TTL_S", RESULT_TTL_S)),
        callbacks=callbacks,
    )
    relay = RelayEmulator(knobs, api_key=os.environ.get("EMULATOR_RELAY_API_KEY", DEFAULT_RELAY_API_KEY))

    def reset() -> None:
        knobs.reset()
        callbacks.clear()
        kling.reset()
        openai.reset()
        gemini.reset()
        ark.reset()
        bfl.reset()
        relay.reset()

    async def generations(request: Request) -> Response:
        if await _wants_kling(request, openai.api_key):
            return await kling.submit(request)
        return await openai.generate(request)

    app = FastAPI(title="Upstream image API emulator", version="1.0")
    app.state.knobs = knobs
    app.state.kling = kling
    app.state.openai = openai
    app.state.bfl = bfl
    app.state.callbacks = callbacks
    app.include_router(build_knobs_router(knobs, reset))
    app.include_router(kling.files_router())
    app.include_router(openai.files_router())
    app.include_router(ark.files_router())
    app.include_router(bfl.files_router())
    app.include_router(kling.build_router(), prefix="/kling")
    app.include_router(openai.build_router(), prefix="/openai")
    app.include_router(gemini.build_router(), prefix="/gemini")
    app.include_router(ark.build_router(), prefix="/ark")
    app.include_router(bfl.build_router(), prefix="/bfl")
    app.include_router(relay.build_router(), prefix="/relay")
    app.add_api_route(PATH, generations, methods=["POST"], tags=["dispatch"])
    app.include_router(kling.build_router(with_submit=False))
    app.add_api_route("/v1/images/edits", openai.edit, methods=["POST"], tags=["openai"])
    return app
