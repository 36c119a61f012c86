#!/usr/bin/env bash
# Start/stop a real MLflow server (sqlite + local artifacts) and a real Prefect server on
# 127.0.0.1 from the project's .venv, without docker.
#
#   infra/local/servers.sh start     # MLflow on :5000, Prefect on :4200 (override with env)
#   infra/local/servers.sh status
#   infra/local/servers.sh stop
#
# Then point pimc at them:  eval "$(infra/local/servers.sh env)"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${PIMC_VENV:-$repo/.venv}/bin
state=${PIMC_SERVERS_DIR:-$repo/.servers}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
mkdir -p "$state"

wait_http() {  # url, name, seconds
  for _ in $(seq "$3"); do
    if "$bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
      echo "$2 ready at $1"; return 0
    fi
    sleep 1
  done
  echo "$2 did not answer at $1 within $3 s; see $state/$2.log" >&2; return 1
}

start() {
  if [ -f "$state/mlflow.pid" ] && kill -0 "$(cat "$state/mlflow.pid")" 2>/dev/null; then
    echo "mlflow already running (pid $(cat "$state/mlflow.pid"))"
  else
    # Without this, `mlflow server` leaves job-runner processes behind after SIGTERM.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$bin/mlflow" server \
      --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri "sqlite:///$state/mlflow.db" \
      --artifacts-destination "$state/mlartifacts" \
      --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
      >"$state/mlflow.log" 2>&1 &
    echo $! >"$state/mlflow.pid"
  fi
  if [ -f "$state/prefect.pid" ] && kill -0 "$(cat "$state/prefect.pid")" 2>/dev/null; then
    echo "prefect already running (pid $(cat "$state/prefect.pid"))"
  else
    # The dashboard asks PREFECT_UI_API_URL for its API (default: port 4200), so it must
    # follow PREFECT_PORT or the UI says "Can't connect to Server API".
    PREFECT_HOME="$state/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
      PREFECT_UI_API_URL="http://127.0.0.1:$PREFECT_PORT/api" \
      setsid "$bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
      >"$state/prefect.log" 2>&1 &
    echo $! >"$state/prefect.pid"
  fi
  wait_http "http://127.0.0.1:$MLFLOW_PORT/health" mlflow 60
  wait_http "http://127.0.0.1:$PREFECT_PORT/api/health" prefect 90
}

stop() {
  for name in mlflow prefect; do
    if [ -f "$state/$name.pid" ]; then
      pid=$(cat "$state/$name.pid")
      # setsid made each server a process-group leader: stop the whole group (workers too).
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      rm -f "$state/$name.pid"
      echo "$name stopped"
    fi
  done
}

status() {
  for name in mlflow prefect; do
    if [ -f "$state/$name.pid" ] && kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
      echo "$name running (pid $(cat "$state/$name.pid"))"
    else
      echo "$name stopped"
    fi
  done
}

env_lines() {
  echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
  echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
