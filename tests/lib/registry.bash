# A real docker-registry (Debian's /usr/bin/docker-registry, distribution 2.x) on
# 127.0.0.1 for the test suites. Sourced, not executed.
#
#   registry_start DIR [PORT]  start a registry storing blobs under DIR/data, with
#                              its access log in DIR/registry.log; sets REG
#                              (host:port), REG_PID, REG_LOG. A PORT restarts a
#                              registry at the same address (same DIR, same data).
#   registry_stop              stop it (REG keeps its value, nothing listens there);
#                              works from any subshell (the pid is in DIR/registry.pid)
#   registry_log_mark          print the access log's current line count
#   registry_requests_since N  print "METHOD PATH STATUS" of requests after line N
#
# The access log is what the tests read to tell which blobs a client downloaded:
# distribution writes one combined-log line per request to stderr whatever the
# log level, so level "error" keeps it free of everything else.

registry_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

registry_start() {
  local dir=$1 port=${2:-}
  [ -n "$port" ] || port=$(registry_free_port)
  REG="127.0.0.1:$port"
  REG_DIR=$dir
  REG_LOG="$dir/registry.log"
  mkdir -p "$dir/data"
  cat >"$dir/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REG
log:
  level: error
EOF
  docker-registry serve "$dir/registry.yml" >>"$REG_LOG" 2>&1 &
  REG_PID=$!
  # Also in a file: a test may stop and restart the registry in a subshell, and
  # the suite's final cleanup must still find the process that runs.
  echo "$REG_PID" >"$dir/registry.pid"
  local _
  for _ in $(seq 100); do
    if curl -fs "http://$REG/v2/" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$REG_PID" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "registry_start: docker-registry did not answer on $REG (log: $REG_LOG)" >&2
  tail -n 20 "$REG_LOG" >&2
  return 1
}

registry_stop() {
  local pid=${REG_PID:-}
  [ -f "${REG_DIR:-}/registry.pid" ] && pid=$(cat "$REG_DIR/registry.pid")
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    # wait only works for a child of this shell; poll for the others
    wait "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "${REG_DIR:-}/registry.pid"
  REG_PID=
}

registry_log_mark() {
  wc -l <"$REG_LOG"
}

registry_requests_since() {
  # The registry writes a request's line after sending the response, so the
  # client may be done before its last line is there: wait until the log has
  # stopped growing for a moment (bounded).
  local size=-1 _
  for _ in $(seq 20); do
    [ "$(stat -c %s "$REG_LOG")" = "$size" ] && break
    size=$(stat -c %s "$REG_LOG")
    sleep 0.2
  done
  tail -n "+$(($1 + 1))" "$REG_LOG" |
    sed -n 's/^[^"]*"\([A-Z]*\) \([^ ]*\) HTTP[^"]*" \([0-9]*\) .*/\1 \2 \3/p'
}
