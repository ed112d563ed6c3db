#!/usr/bin/env bash
# A small Apache Spark cluster on 127.0.0.1, from PyPI's pyspark (which ships every jar, Spark
# Connect included): a standalone master, two workers (one core each) and the Spark Connect
# server on port 15002, for the Spark tests and benchmarks.
#
#   tools/spark/cluster.sh start RUN_DIR    # returns once Spark Connect accepts connections
#   tools/spark/cluster.sh stop RUN_DIR
#
# RUN_DIR holds the logs, pid files and worker scratch space. Needs java (17+) and
# `pip install pyspark==4.3.0`.
set -euo pipefail
action="${1:?start or stop}"
run_dir="${2:?a directory for logs and pid files}"

if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
fi
export JAVA_HOME
SPARK_HOME="${SPARK_HOME:-$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
export SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1
export SPARK_LOG_DIR="$run_dir/logs" SPARK_PID_DIR="$run_dir/pids" SPARK_WORKER_DIR="$run_dir/work"
# No REST submission port on the master: nothing here submits that way.
export SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false"
daemon="$SPARK_HOME/sbin/spark-daemon.sh"

case "$action" in
start)
  for port in 7077 15002; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "something already listens on 127.0.0.1:$port; stop it first" >&2
      exit 1
    fi
  done
  mkdir -p "$SPARK_LOG_DIR" "$SPARK_PID_DIR" "$SPARK_WORKER_DIR"
  # The heap of the master and worker JVMs themselves, not of the work they run.
  export SPARK_DAEMON_MEMORY=256m
  "$daemon" start org.apache.spark.deploy.master.Master 1 \
    --host 127.0.0.1 --port 7077 --webui-port 18080
  for i in 1 2; do
    "$daemon" start org.apache.spark.deploy.worker.Worker "$i" \
      --host 127.0.0.1 --cores 1 --memory 1g --webui-port $((18080 + i)) spark://127.0.0.1:7077
  done
  # The launcher takes SPARK_DAEMON_MEMORY as the Connect server's driver heap.
  SPARK_DAEMON_MEMORY=1g "$SPARK_HOME/sbin/start-connect-server.sh" \
    --master spark://127.0.0.1:7077 --driver-memory 1g --executor-memory 512m \
    --total-executor-cores 2 \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port=15002 \
    --conf spark.ui.enabled=false \
    --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.sql.shuffle.partitions=4
  for _ in $(seq 1 240); do
    if (exec 3<>/dev/tcp/127.0.0.1/15002) 2>/dev/null; then
      echo "Spark Connect is listening on 127.0.0.1:15002"
      exit 0
    fi
    sleep 0.5
  done
  echo "Spark Connect did not come up; its logs:" >&2
  tail -n 50 "$SPARK_LOG_DIR"/* >&2 || true
  exit 1
  ;;
stop)
  "$SPARK_HOME/sbin/stop-connect-server.sh" || true
  for i in 1 2; do "$daemon" stop org.apache.spark.deploy.worker.Worker "$i" || true; done
  "$daemon" stop org.apache.spark.deploy.master.Master 1 || true
  ;;
*)
  echo "usage: $0 start|stop RUN_DIR" >&2
  exit 2
  ;;
esac
