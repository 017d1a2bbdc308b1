"""MLflow's own scoring app for the model, behind a guard for hostile requests (what it guards: docs/serving.md).

python -m aivsreal.serving.server                     # the champion (params.yaml's model) on 127.0.0.1:5001
python -m aivsreal.serving.server -m models:/ai-vs-real/3 -p 8080 --max-body-mb 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

CONTENT_TYPES = "application/json, text/csv or application/vnd.apache.parquet"
MAX_MESSAGE = 300  # characters of an error message sent back to the client
MODEL_ENV, MAX_BODY_ENV = "AIVSREAL_SERVE_MODEL", "AIVSREAL_SERVE_MAX_BODY"
log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


def short_message(message: str) -> str:
    """MLflow's error message without the echo of the request, capped at MAX_MESSAGE characters."""
    _, found, rest = message.partition(". \nError: ")  # "Failed to predict data '<the whole frame>'. \nError: ..."
    message = rest if found else message
    message = message.split("\nInput: \n", 1)[0]  # the invalid JSON body, verbatim
    message = re.sub(r"of data '.*?' with schema", "with schema", message, flags=re.DOTALL)
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


class RequestGuard:
    """ASGI middleware: size and Content-Type checks on POSTs, short errors without traces."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not headers.get("content-type", "").strip():
            return await reply(send, 415, f"set a Content-Type: {CONTENT_TYPES}")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return await reply(send, 413, f"body of {int(declared):,} bytes is over the {self.max_body:,} byte limit")

        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge
            return message

        response: dict = {"start": None, "body": []}

        async def held_send(message):  # held back until the app is done, so an error can be rewritten
            if message["type"] == "http.response.start":
                response["start"] = message
            elif message["type"] == "http.response.body":
                response["body"].append(message.get("body", b""))

        try:
            await self.app(scope, counted_receive, held_send)
        except BodyTooLarge:
            return await reply(send, 413, f"request body is over the {self.max_body:,} byte limit")
        except RecursionError:
            return await reply(send, 400, "the request JSON is nested too deeply")
        except Exception:
            log.exception("unexpected error while scoring")  # the trace stays in the server log
            return await reply(send, 500, "internal error while scoring; the server log has the details", "INTERNAL")
        start, body = response["start"], b"".join(response["body"])
        status = start["status"]
        if status >= 400:
            return await reply(send, status, *error_fields(body))
        await send(start)
        await send({"type": "http.response.body", "body": body})


def error_fields(body: bytes) -> tuple[str, str]:
    """(message, error_code) from one of MLflow's error bodies (JSON, or plain text for 415s)."""
    try:
        error = json.loads(body)
        return short_message(str(error.get("message", ""))), str(error.get("error_code", "BAD_REQUEST"))
    except (ValueError, AttributeError):
        return short_message(body.decode("utf-8", "replace")), "BAD_REQUEST"


async def reply(send, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_app(model_uri: str, max_body_bytes: int) -> RequestGuard:
    """MLflow's scoring app for the model at `model_uri`, wrapped in the guard."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from aivsreal.tracking import configure_tracking

    configure_tracking()
    return RequestGuard(scoring_server.init(mlflow.pyfunc.load_model(model_uri)), max_body_bytes)


def app_from_env() -> RequestGuard:
    """uvicorn's factory for `--workers` > 1: each worker process loads the model once."""
    return guarded_app(os.environ[MODEL_ENV], int(os.environ[MAX_BODY_ENV]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aivsreal.serving.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", help="MLflow model URI (default: params.yaml's registered model @champion)")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    parser.add_argument("-p", "--port", type=int, default=5001, help="port (default: 5001)")
    parser.add_argument("-w", "--workers", type=int, default=1, help="server processes (default: 1)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MB (default: 64)")
    args = parser.parse_args(argv)
    max_body = int(args.max_body_mb * 1_000_000)

    import uvicorn

    from aivsreal.tracking import NO_MODEL_HINT, default_model_uri

    try:
        model = args.model or default_model_uri()
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        app = guarded_app(model, max_body)  # fail here, with a message, rather than in a worker
    except Exception as error:
        print(
            f"cannot load model {model!r}: {str(error)[:300]}\n{NO_MODEL_HINT}, or pass -m with another model URI.",
            file=sys.stderr,
        )
        return 2
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port)
    else:
        os.environ[MODEL_ENV], os.environ[MAX_BODY_ENV] = model, str(max_body)
        uvicorn.run(
            "aivsreal.serving.server:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
