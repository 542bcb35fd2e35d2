#!/bin/sh
# Run a command that downloads packages, trusting the build secret `ca` (if one was given) on top of
# the image's own CA bundle. The combined bundle lives only for the command.
set -eu
secret=/run/secrets/ca
if [ -s "$secret" ]; then
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat /etc/ssl/certs/ca-certificates.crt "$secret" > "$bundle"
  SSL_CERT_FILE=$bundle PIP_CERT=$bundle "$@"
else
  "$@"
fi
