"""The yardstick for bench/intake.py: a Flask endpoint that only checks the webhook HMAC and answers."""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    secret = os.environ["GITHUB_WEBHOOK_SECRET"].encode()
    app = Flask(__name__)

    @app.post("/api/github/webhooks")
    def receive() -> tuple[Response, int]:
        body = request.get_data(cache=False)
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return jsonify({"message": "signature does not match"}), 401
        return jsonify({"message": "accepted"}), 202

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    return app
