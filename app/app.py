"""dropstack's sample app: a small Flask site deployed by default.

Routes: / (a page), /healthz (the health check), /static/style.css (served by nginx).
"""
import os
import socket

from flask import Flask, jsonify, render_template_string, request

app = Flask(__name__)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ title }}</title>
  <link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
</head>
<body>
  <h1>{{ title }}</h1>
  <p>Served by gunicorn on {{ host }} behind nginx, over {{ scheme }}.</p>
  <p class="version">version: {{ version }}</p>
</body>
</html>
"""

VERSION = "v1"


@app.route("/")
def index():
    return render_template_string(
        PAGE,
        title=os.environ.get("APP_TITLE", "Hello from dropstack"),
        host=socket.gethostname(),
        scheme=request.scheme,
        version=VERSION,
    )


@app.route("/healthz")
def healthz():
    return jsonify(status="ok", version=VERSION)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
