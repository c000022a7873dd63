# Installed by dropstack: gunicorn settings for {{app}}.
# The app's environment comes from env.json (mode 0600, owned by the app user) so that every value,
# multi-line or full of quotes and dollars, arrives byte for byte.
import json
import multiprocessing
import os

with open("/srv/{{app}}/shared/env.json", encoding="utf-8") as env_file:
    os.environ.update(json.load(env_file))

# bind and chdir come from the slot's command line (blue or green socket, its release folder).
workers = {{workers}}
worker_class = "sync"
timeout = 30
graceful_timeout = 20
# Only nginx can reach the socket, so its X-Forwarded-* headers are trusted.
forwarded_allow_ips = "*"
accesslog = "-"
errorlog = "-"
capture_output = True
proc_name = "{{app}}"
