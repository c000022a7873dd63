"""dropstack's sample app: a small Flask site deployed by default.

Routes: / (a page, templates/index.html), /healthz (the health check), /static/style.css (served by nginx),
POST /counter (a counter kept in shared/data, which survives releases), GET and POST /notes (rows in
PostgreSQL, when dropstack gives the app a DATABASE_URL; migrate.py keeps the schema), and under /api the
same notes and /api/version for the sample client (client/).
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


def _database():
    """A connection to DATABASE_URL, or None without one (psycopg2 is imported only when used)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    import psycopg2  # pylint: disable=import-outside-toplevel

    return psycopg2.connect(url)


@app.route("/notes", methods=["GET", "POST"])
def notes():
    """Notes kept in PostgreSQL: data that must survive releases, reboots and a replaced droplet."""
    conn = _database()
    if conn is None:
        return jsonify(error="no database: set dropstack:database"), 503
    try:
        with conn, conn.cursor() as cur:
            if request.method == "POST":
                body = (request.get_json(silent=True) or {}).get("body") or request.form.get("body", "")
                if not body:
                    return jsonify(error="a note needs a body"), 400
                cur.execute("INSERT INTO notes (body) VALUES (%s) RETURNING id", (body,))
                return jsonify(id=cur.fetchone()[0], version=VERSION), 201
            cur.execute("SELECT id, body FROM notes ORDER BY id")
            return jsonify(notes=[{"id": i, "body": b} for i, b in cur.fetchall()], version=VERSION)
    finally:
        conn.close()


# The API a built client calls (dropstack:clientSource serves the client at / and hands /api/... to
# the app, the path unchanged).
app.add_url_rule("/api/notes", "api_notes", notes, methods=["GET", "POST"])


@app.route("/api/version")
def api_version():
    return jsonify(version=VERSION)


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
