#!/bin/sh
# Installed by dropstack: certbot runs this after it deploys a renewed certificate.
# Reload nginx only with a configuration it accepts; leave a trace in the journal either way.
set -e
if nginx -t -q; then
  systemctl reload nginx
  logger -t dropstack "certificate renewed for ${RENEWED_DOMAINS:-?}; nginx reloaded"
else
  logger -t dropstack "certificate renewed for ${RENEWED_DOMAINS:-?}; nginx -t failed, nginx NOT reloaded"
  exit 1
fi
