#!/usr/bin/env bash
# Provisions the Kafka clients the compatibility tests run (tests/tests/it/kafka_clients.rs):
# a Python venv at target/kafka-venv with the pinned packages of tests/kafka/requirements.txt
# (kafka-python, confluent-kafka, kafka-python's compression codecs, prometheus_client), kcat,
# kafkajs (npm, with Debian's nodejs) under target/kafkajs, and rsyslog with omkafka.
#
#   bash tests/kafka/setup.sh
#
# Idempotent: a second run only checks a stamp and prints the versions (about a second).
# Needs root (or sudo-less apt) only when python3-venv or kcat is missing; works on a fresh
# Debian machine. TIDELOG_KAFKA_VENV overrides the venv's location.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${TIDELOG_KAFKA_VENV:-target/kafka-venv}
requirements=tests/kafka/requirements.txt
stamp=$venv/.tidelog-requirements

apt_updated=
apt_install() {
  if [[ -z $apt_updated ]]; then
    apt-get update -q >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3
fi

# Rebuild the venv when it is missing, broken (e.g. its python3 was removed) or installed from
# other requirements.
if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'pass' 2>/dev/null \
  && [[ -f $stamp ]] && cmp -s "$stamp" "$requirements"; then
  :
else
  echo "== kafka clients: creating $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately.
    rm -rf "$venv"
    pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # Wheels only: a source build of confluent-kafka needs librdkafka headers and would hide a
  # missing wheel behind a slow, fragile compile.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
    -r "$requirements"
  cp "$requirements" "$stamp"
fi

if ! command -v kcat >/dev/null 2>&1; then
  echo "== kafka clients: installing kcat"
  apt_install kcat
fi

# A real log shipper: rsyslog with omkafka (librdkafka), from Debian.
if ! command -v rsyslogd >/dev/null 2>&1 || ! compgen -G "/usr/lib/*/rsyslog/omkafka.so" >/dev/null; then
  echo "== kafka clients: installing rsyslog and rsyslog-kafka"
  apt_install rsyslog rsyslog-kafka
fi

# kafkajs (Node.js), pinned, under target/kafkajs (TIDELOG_KAFKAJS_DIR overrides).
kafkajs_version=2.2.4
kafkajs_dir=${TIDELOG_KAFKAJS_DIR:-target/kafkajs}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== kafka clients: installing nodejs and npm"
  apt_install nodejs npm
fi
if ! grep -qs "\"version\": \"$kafkajs_version\"" "$kafkajs_dir/node_modules/kafkajs/package.json"; then
  echo "== kafka clients: installing kafkajs $kafkajs_version into $kafkajs_dir"
  mkdir -p "$kafkajs_dir"
  npm install --prefix "$kafkajs_dir" --no-audit --no-fund --silent "kafkajs@$kafkajs_version"
fi

"$venv/bin/python" - <<'PY'
import confluent_kafka, kafka, lz4, prometheus_client, snappy, zstandard
print(
    f"kafka clients: kafka-python {kafka.__version__}, "
    f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]}), "
    f"lz4 {lz4.__version__}, zstandard {zstandard.__version__}"
)
PY
echo "kafka clients: kafkajs $kafkajs_version (node $(node --version))"
echo "kafka clients: $(rsyslogd -v 2>/dev/null | sed -n 1p | tr -s " ") with omkafka"
echo "kafka clients: kcat $(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\) .*\(librdkafka [^ ]*\).*/\1 (\2)/p')"
