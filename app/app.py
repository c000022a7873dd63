"""dropstack's sample app: a small Flask site deployed by default.

Routes: / (a page, templates/index.html), /healthz (the health check), /static/style.css (served by nginx),
POST /counter (a counter kept in shared/data, which survives releases).
"""
import hashlib
import os
import socket

from flask import Flask, jsonify, render_template, request

app = Flask(__name__)

VERSION = "v1"


@app.route("/")
def index():
    # A template file is compiled once and cached; render_template_string would compile the
    # page again on every request (measured: about five times the cost of the whole request).
    return render_template(
        "index.html",
        title=os.environ.get("APP_TITLE", "Hello from dropstack"),
        host=socket.gethostname(),
        scheme=request.scheme,
        version=VERSION,
    )


@app.route("/counter", methods=["POST"])
def counter():
    """Counts in a file under shared/data: data that must survive releases and rollbacks."""
    path = os.path.join(os.environ.get("DROPSTACK_DATA_DIR", "."), "counter.txt")
    try:
        with open(path, encoding="utf-8") as f:
            value = int(f.read() or 0)
    except FileNotFoundError:
        value = 0
    value += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(str(value))
    return jsonify(counter=value, version=VERSION)


@app.route("/healthz")
def healthz():
    return jsonify(status="ok", version=VERSION)


if os.environ.get("DROPSTACK_DEBUG_ROUTES") == "1":
    # Test-only (enabled by the end-to-end config): proves a secret arrived byte for byte
    # without ever showing it.
    @app.route("/debug/secret-sha256")
    def secret_sha256():
        value = os.environ.get("SECRET_PROBE", "")
        return jsonify(sha256=hashlib.sha256(value.encode("utf-8")).hexdigest(), length=len(value))


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
