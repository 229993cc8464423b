#!/usr/bin/env bash
# Runs a real single-node Apache Kafka (KRaft) on 127.0.0.1 for tests, from Maven Central jars.
#
#   testenv/kafka.sh start | stop | status | restart-broker | stop-broker | start-broker
#
# State (config, data, logs, certificates, kafka.env) lives in $ATKAFKA_TEST_STATE (default /tmp/atkafka-kafka-$UID).
# The broker's data goes to a fresh folder in $ATKAFKA_KAFKA_DATA_PARENT: by default /dev/shm when it is a tmpfs with
# 4 GiB free, else the state folder. The test VMs' shared virtual disk (ext4) stalls appends for up to a second
# behind its journal commits, and a test or benchmark then measures that disk, not atkafka; a test broker's data
# need not outlive the machine. Set ATKAFKA_KAFKA_DATA_PARENT=/tmp (say) to measure against a disk.
# Jars are cached in ${XDG_CACHE_HOME:-$HOME/.cache}/atkafka/kafka-<version>/lib and fetched with mvn on first use.
# `start` writes $ATKAFKA_TEST_STATE/kafka.env for tests to source:
#   ATKAFKA_TEST_KAFKA       PLAINTEXT host:port
#   ATKAFKA_TEST_KAFKA_SASL  SASL_PLAINTEXT host:port, mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, user atkafka,
#                            password atkafka-secret
#   ATKAFKA_TEST_KAFKA_TLS   SSL host:port, server certificate signed by ATKAFKA_TEST_KAFKA_TLS_CA
#   ATKAFKA_TEST_KAFKA_MTLS  SSL host:port that requires a client certificate signed by the same CA:
#                            ATKAFKA_TEST_KAFKA_TLS_CLIENT_CERT and ATKAFKA_TEST_KAFKA_TLS_CLIENT_KEY
#   ATKAFKA_TEST_KAFKA_SCRIPT, ATKAFKA_TEST_STATE
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/$(basename "${BASH_SOURCE[0]}")"
pom="$here/kafka/pom.xml"
state="${ATKAFKA_TEST_STATE:-/tmp/atkafka-kafka-$(id -u)}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
lib="${XDG_CACHE_HOME:-$HOME/.cache}/atkafka/kafka-$version/lib"
cds="$lib/../broker.jsa"
start_timeout="${ATKAFKA_KAFKA_START_TIMEOUT:-120}"
stop_timeout=30
sasl_user=atkafka
sasl_password=atkafka-secret

die() {
	echo "kafka.sh: $*" >&2
	exit 1
}

require() {
	command -v "$1" >/dev/null || die "$1 not found: $2"
}

# fetch_jars resolves the broker and a logging backend once; the rename keeps a half-done download from being
# mistaken for a cache.
fetch_jars() {
	[[ -d "$lib" ]] && return
	require mvn "install Maven (apt-get install maven) to fetch the Kafka jars"
	echo "kafka.sh: fetching Apache Kafka $version jars into $lib" >&2
	local tmp="$lib.tmp.$$"
	rm -rf "$tmp"
	local log="${TMPDIR:-/tmp}/atkafka-mvn.$$.log"
	if ! mvn -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "mvn could not fetch the Kafka $version jars (is Maven Central reachable?); full log in $log"
	fi
	rm -f "$log"
	mv "$tmp" "$lib"
}

# free_port picks a random port nothing listens on and that was not handed out already in this run.
free_port() {
	local port used
	used="$(ss -Htan | awk '{print $4}' | sed 's/.*://')"
	for _ in $(seq 100); do
		port=$((20000 + RANDOM % 30000))
		if ! grep -qx "$port" <<<"$used" && [[ " ${picked:-} " != *" $port "* ]]; then
			picked="${picked:-} $port"
			echo "$port"
			return
		fi
	done
	die "no free port found"
}

make_certs() {
	require openssl "install openssl to make the test certificates"
	local d="$state/tls"
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=atkafka test CA" \
		-keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
		-extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
	# Kafka's PEM keystore wants the PKCS#8 key followed by the certificate chain in one file.
	openssl pkcs8 -topk8 -nocrypt -in "$d/server.key" -out "$d/server.p8"
	cat "$d/server.p8" "$d/server.crt" >"$d/server.pem"
	openssl req -newkey rsa:2048 -nodes -subj "/CN=atkafka test client" -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
	openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
		-out "$d/client.crt" 2>/dev/null
}

write_config() {
	local plain sasl tls controller
	plain="$(free_port)"
	sasl="$(free_port)"
	tls="$(free_port)"
	mtls="$(free_port)"
	controller="$(free_port)"
	cat >"$state/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$plain,SASL_PLAINTEXT://127.0.0.1:$sasl,SSL://127.0.0.1:$tls,MTLS://127.0.0.1:$mtls,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$plain,SASL_PLAINTEXT://127.0.0.1:$sasl,SSL://127.0.0.1:$tls,MTLS://127.0.0.1:$mtls
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
# One node: every internal topic must fit on it, or idempotent producers and groups never get a coordinator.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests exercise atkafka's own topic creation, so the broker must not hide a missing one.
auto.create.topics.enable=false
num.partitions=1
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$sasl_user" password="$sasl_password" user_$sasl_user="$sasl_password";
# The SCRAM credentials are written into the metadata log by format_storage.
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$state/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$state/tls/ca.pem
ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
EOF
	cat >"$state/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$state/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
EOF
	cat >"$state/kafka.env" <<EOF
ATKAFKA_TEST_KAFKA=127.0.0.1:$plain
ATKAFKA_TEST_KAFKA_SASL=127.0.0.1:$sasl
ATKAFKA_TEST_KAFKA_TLS=127.0.0.1:$tls
ATKAFKA_TEST_KAFKA_TLS_CA=$state/tls/ca.pem
ATKAFKA_TEST_KAFKA_MTLS=127.0.0.1:$mtls
ATKAFKA_TEST_KAFKA_TLS_CLIENT_CERT=$state/tls/client.crt
ATKAFKA_TEST_KAFKA_TLS_CLIENT_KEY=$state/tls/client.key
ATKAFKA_TEST_KAFKA_SCRIPT=$script
ATKAFKA_TEST_STATE=$state
EOF
}

# java_cmd sets jvm to the command prefix that runs a Kafka class with our classpath and logging.
java_cmd() {
	# A small heap and serial GC: the test machines have two cores shared with the tests themselves.
	jvm=(java -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
		-Dlog4j2.configurationFile="$state/log4j2.properties" -cp "$lib/*")
	if [[ -f "$cds" ]]; then
		jvm+=(-XX:SharedArchiveFile="$cds")
	fi
}

# broker_cds makes the first broker record a class-data-sharing archive of its classes at exit (see stop_broker);
# java_cmd uses it from then on, which cuts a loaded machine's start-up time by half or more. A stale archive is
# only ignored by the JVM.
broker_cds() {
	if [[ ! -f "$cds" ]]; then
		jvm+=(-XX:ArchiveClassesAtExit="$state/broker.jsa")
	fi
}

format_storage() {
	local id
	# A cluster id is 16 random bytes in unpadded base64url, as `StorageTool random-uuid` makes, without a JVM start.
	# One starting with "-" would be read as an option (1 start in 64 failed so), so draw again.
	id=-
	while [[ "$id" == -* ]]; do
		id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
	done
	java_cmd
	"${jvm[@]}" kafka.tools.StorageTool format -t "$id" -c "$state/server.properties" \
		--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]" \
		--add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]" >"$state/format.log" 2>&1 ||
		die "formatting the KRaft storage failed: $(tail -n 20 "$state/format.log")"
}

broker_pid() {
	local pid
	pid="$(cat "$state/kafka.pid" 2>/dev/null)" || return 1
	kill -0 "$pid" 2>/dev/null && echo "$pid"
}

plain_port() {
	sed -n 's/^ATKAFKA_TEST_KAFKA=.*://p' "$state/kafka.env"
}

fail_start() {
	echo "kafka.sh: $1; last broker log lines:" >&2
	tail -n 40 "$state/server.log" "$state/kafka.out" >&2 2>/dev/null || true
	exit 1
}

# start_broker launches the JVM and waits until it has finished starting and its client port accepts connections.
start_broker() {
	broker_pid >/dev/null && return
	local marker
	marker="$(wc -l <"$state/server.log" 2>/dev/null || echo 0)"
	java_cmd
	broker_cds
	# setsid: the broker must not get the terminal's or the test process group's signals.
	setsid "${jvm[@]}" kafka.Kafka "$state/server.properties" >>"$state/kafka.out" 2>&1 </dev/null &
	echo $! >"$state/kafka.pid"
	local port deadline=$((SECONDS + start_timeout))
	port="$(plain_port)"
	while ((SECONDS < deadline)); do
		broker_pid >/dev/null || fail_start "the broker exited while starting"
		if tail -n "+$((marker + 1))" "$state/server.log" 2>/dev/null | grep -q 'Kafka Server started' &&
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return
		fi
		sleep 0.5
	done
	fail_start "the broker did not start within ${start_timeout}s"
}

# stop_broker asks the JVM to shut down cleanly (so the next start needs no log recovery), killing it if it hangs.
stop_broker() {
	local pid
	pid="$(broker_pid)" || return 0
	kill -TERM "$pid"
	local deadline=$((SECONDS + stop_timeout))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			echo "kafka.sh: broker did not stop within ${stop_timeout}s, killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.2
	done
	rm -f "$state/kafka.pid"
	if [[ -f "$state/broker.jsa" && ! -f "$cds" ]]; then
		mv "$state/broker.jsa" "$cds.$$" && mv -f "$cds.$$" "$cds"
	fi
	rm -f "$state/broker.jsa"
}

# data_parent picks where the broker's data folder goes; see the header.
data_parent() {
	if [[ -n "${ATKAFKA_KAFKA_DATA_PARENT:-}" ]]; then
		echo "$ATKAFKA_KAFKA_DATA_PARENT"
	elif [[ "$(stat -f -c %T /dev/shm 2>/dev/null)" == tmpfs && -w /dev/shm ]] &&
		(($(df -P -k /dev/shm | awk 'NR == 2 { print $4 }') >= 4 * 1024 * 1024)); then
		echo /dev/shm
	else
		echo "$state"
	fi
}

# remove_data deletes the data folder a previous start made, which may be outside the state folder.
remove_data() {
	local old
	old="$(cat "$state/data-dir" 2>/dev/null)" || return 0
	[[ "$(basename "$old")" == atkafka-kafka-data.* ]] && rm -rf "$old"
}

cmd_start() {
	require java "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
	require ss "install iproute2"
	if broker_pid >/dev/null; then
		echo "kafka.sh: already running; $state/kafka.env" >&2
		return
	fi
	fetch_jars
	remove_data
	rm -rf "$state"
	mkdir -p "$state"
	local parent
	parent="$(data_parent)"
	mkdir -p "$parent"
	data="$(mktemp -d "$parent/atkafka-kafka-data.XXXXXX")"
	echo "$data" >"$state/data-dir"
	make_certs
	write_config
	format_storage
	start_broker
	echo "kafka.sh: Apache Kafka $version running, data in $data; env in $state/kafka.env" >&2
	cat "$state/kafka.env"
}

cmd_stop() {
	stop_broker
	# Only remove what looks like our state folder, whatever ATKAFKA_TEST_STATE says.
	if [[ -f "$state/server.properties" || ! -e "$state" ]]; then
		remove_data
		rm -rf "$state"
	else
		echo "kafka.sh: $state does not look like a kafka.sh state folder; left in place" >&2
	fi
}

cmd_status() {
	local pid
	if pid="$(broker_pid)"; then
		echo "running (pid $pid)"
		cat "$state/kafka.env"
	else
		echo "not running"
		return 1
	fi
}

need_state() {
	[[ -f "$state/server.properties" ]] || die "no broker state in $state; run '$0 start' first"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
stop-broker) need_state && stop_broker ;;
start-broker) need_state && start_broker ;;
restart-broker) need_state && stop_broker && start_broker ;;
*) die "usage: $0 start|stop|status|restart-broker|stop-broker|start-broker" ;;
esac
