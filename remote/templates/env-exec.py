#!/usr/bin/python3
# Installed by dropstack as /usr/local/lib/dropstack/env-exec and mounted read-only into the app's
# container at /run/dropstack/env-exec. Every container command runs through it:
#   python3 /run/dropstack/env-exec '<the command as a JSON list>'
# It adds the app's environment from /run/dropstack/env.json (mounted read-only, private to the
# app's user) to its own, then runs the command in its place. So every value, multi-line or full
# of quotes, arrives byte for byte, and none is on a command line or in `docker inspect`.
import json
import os
import sys

if len(sys.argv) != 2:
    sys.exit("usage: env-exec '<command as a JSON list>'")
command = json.loads(sys.argv[1])
if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
    sys.exit("env-exec: the command must be a non-empty JSON list of strings")
with open(os.environ.get("DROPSTACK_ENV_FILE", "/run/dropstack/env.json"), encoding="utf-8") as env_file:
    os.environ.update(json.load(env_file))
os.execvp(command[0], command)
