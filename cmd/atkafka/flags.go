package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/atkafka/atkafka/server"
	"github.com/atkafka/atkafka/sink/embedded"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/backfill"
	"github.com/atkafka/atkafka/source/ozone"
	"github.com/atkafka/atkafka/source/relay"
	"github.com/atkafka/atkafka/source/tap"
	"github.com/atkafka/atkafka/transform/enrich"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/verify"
)

// The values of --log-format and --route-account-events, the default first.
var (
	logFormats         = []string{"text", "json"}
	routeAccountEvents = []string{"all", "main"}
)

// choices lists the values of an enumeration for a help text: "a, b or c".
func choices[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// env returns the ATKAFKA_ variable for a flag, plus any legacy names existing deployments set.
func env(name string, legacy ...string) cli.ValueSourceChain {
	return cli.EnvVars(append([]string{"ATKAFKA_" + name}, legacy...)...)
}

// Flag categories. Those of global flags say whether a flag applies to reading (readingCategories), which is what
// atkafka tail's help lists.
const (
	catKafka       = "Kafka"
	catSecurity    = "Kafka security"
	catProducer    = "Kafka producer"
	catExactlyOnce = "Exactly once"
	catEmbedded    = "Embedded broker"
	catOps         = "Operations"
	catLogging     = "Logging"
	catFilter      = "Filters"
	catEnrich      = "Enrichment"
	catFormat      = "Output format"
)

// readingCategories are the categories of the global flags that apply to reading a topic.
var readingCategories = []string{catKafka, catSecurity, catLogging}

// readingHelpTemplate is urfave/cli's command help listing, of the global flags, only those of readingCategories:
// a command that reads a topic accepts the producer's, exactly-once and operations flags (they are global) but
// has no use for them.
func readingHelpTemplate() string {
	cond := make([]string, len(readingCategories))
	for i, c := range readingCategories {
		cond[i] = fmt.Sprintf("(eq .GetCategory %q)", c)
	}
	flags := `{{range .VisiblePersistentFlags}}{{if or ` + strings.Join(cond, " ") + `}}
   {{wrap .String 6}}{{end}}{{end}}`
	return strings.Replace(cli.CommandHelpTemplate, `{{template "visiblePersistentFlagTemplate" .}}`, flags, 1)
}

// globalFlags apply to every command; urfave/cli makes them valid before or after the subcommand.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "bootstrap-servers", Category: catKafka, Sources: env("BOOTSTRAP_SERVERS"),
			Usage: "Kafka bootstrap servers, comma separated. When empty, atkafka starts an embedded in-memory broker for trying it out"},
		&cli.StringFlag{Name: "output-topic", Category: catKafka, Sources: env("OUTPUT_TOPIC"), Value: "atproto-events",
			Usage: "Kafka topic events are produced to"},
		&cli.StringFlag{Name: "dead-letter-topic", Category: catProducer, Sources: env("DEAD_LETTER_TOPIC"),
			Usage: "topic for inputs that could not be decoded, kept raw so nothing is lost (default: <output-topic>.deadletter)"},
		&cli.StringFlag{Name: "compression", Category: catProducer, Sources: env("COMPRESSION"), Value: kafka.DefaultCompression,
			Usage: "record batch compression: " + choices(kafka.Compressions)},
		&cli.DurationFlag{Name: "linger", Category: catProducer, Sources: env("LINGER"), Value: 5 * time.Millisecond,
			Usage: "how long the producer waits to fill a batch"},
		&cli.IntFlag{Name: "max-batch-bytes", Category: catProducer, Sources: env("MAX_BATCH_BYTES"), Value: 1 << 20,
			Usage: "largest record batch the producer sends; keep it at or below the topic's max.message.bytes"},
		&cli.StringFlag{Name: "acks", Category: catProducer, Sources: env("ACKS"), Value: kafka.DefaultAcks,
			Usage: "acknowledgement level: all (idempotent, the only setting that cannot lose acknowledged records), leader or none"},
		&cli.IntFlag{Name: "max-inflight-records", Category: catProducer, Sources: env("MAX_INFLIGHT_RECORDS"), Value: kafka.DefaultMaxInFlightRecords,
			Usage: "records handed to Kafka and not yet acknowledged before sources pause (backpressure)"},
		&cli.IntFlag{Name: "max-inflight-bytes", Category: catProducer, Sources: env("MAX_INFLIGHT_BYTES"), Value: kafka.DefaultMaxInFlightBytes,
			Usage: "bytes of records handed to Kafka and not yet acknowledged before sources pause (backpressure)"},
		&cli.BoolFlag{Name: "create-topic", Category: catProducer, Sources: env("CREATE_TOPIC"), Value: true,
			Usage: "create the output and dead-letter topics when missing (--create-topic=false to turn off)"},
		&cli.IntFlag{Name: "topic-partitions", Category: catProducer, Sources: env("TOPIC_PARTITIONS"), Value: 64,
			Usage: "partitions of a topic atkafka creates"},
		&cli.IntFlag{Name: "topic-replication-factor", Category: catProducer, Sources: env("TOPIC_REPLICATION_FACTOR"),
			Usage: "replication factor of a topic atkafka creates (0: the broker's default)"},
		&cli.BoolFlag{Name: "exactly-once", Category: catExactlyOnce, Sources: env("EXACTLY_ONCE"),
			Usage: "commit records and the source cursor in one Kafka transaction, so a crash neither loses nor repeats anything for consumers reading with isolation.level=read_committed (relay and ozone-events; needs --acks all; adds up to 200ms of latency)"},
		&cli.StringFlag{Name: "transactional-id", Category: catExactlyOnce, Sources: env("TRANSACTIONAL_ID"),
			Usage: "Kafka transactional id of --exactly-once; a second instance with the same id fences the first (default: atkafka-<command>-<output-topic>)"},
		&cli.StringFlag{Name: "cursor-topic", Category: catExactlyOnce, Sources: env("CURSOR_TOPIC"),
			Usage: "compacted topic where --exactly-once keeps the source cursor, written in each transaction (default: <output-topic>.cursors)"},
		&cli.DurationFlag{Name: "kafka-connect-timeout", Category: catKafka, Sources: env("KAFKA_CONNECT_TIMEOUT"), Value: kafka.DefaultConnectTimeout,
			Usage: "how long start-up waits for a reachable broker before failing"},

		&cli.BoolFlag{Name: "kafka-tls", Category: catSecurity, Sources: env("KAFKA_TLS"), Usage: "connect to Kafka over TLS"},
		&cli.StringFlag{Name: "kafka-tls-ca-file", Category: catSecurity, Sources: env("KAFKA_TLS_CA_FILE"), TakesFile: true,
			Usage: "PEM file of the CA that signed the brokers' certificates (default: the system's roots)"},
		&cli.StringFlag{Name: "kafka-tls-cert-file", Category: catSecurity, Sources: env("KAFKA_TLS_CERT_FILE"), TakesFile: true,
			Usage: "PEM client certificate for mutual TLS"},
		&cli.StringFlag{Name: "kafka-tls-key-file", Category: catSecurity, Sources: env("KAFKA_TLS_KEY_FILE"), TakesFile: true,
			Usage: "PEM private key of the client certificate"},
		&cli.BoolFlag{Name: "kafka-tls-insecure-skip-verify", Category: catSecurity, Sources: env("KAFKA_TLS_INSECURE_SKIP_VERIFY"),
			Usage: "do not verify the brokers' certificates (testing only)"},
		&cli.StringFlag{Name: "kafka-sasl-mechanism", Category: catSecurity, Sources: env("KAFKA_SASL_MECHANISM"),
			Usage: "SASL mechanism: " + choices(kafka.SASLMechanisms) + " (empty: no SASL)"},
		&cli.StringFlag{Name: "kafka-sasl-username", Category: catSecurity, Sources: env("KAFKA_SASL_USERNAME"), Usage: "SASL user name"},
		&cli.StringFlag{Name: "kafka-sasl-password", Category: catSecurity, Sources: env("KAFKA_SASL_PASSWORD"), HideDefault: true,
			Usage: "SASL password (prefer the environment variable or --kafka-sasl-password-file over the command line)"},
		&cli.StringFlag{Name: "kafka-sasl-password-file", Category: catSecurity, Sources: env("KAFKA_SASL_PASSWORD_FILE"), TakesFile: true,
			Usage: "file holding the SASL password"},

		&cli.StringFlag{Name: "embedded-broker-address", Category: catKafka, Sources: env("EMBEDDED_BROKER_ADDRESS"), Value: embedded.DefaultAddr,
			Usage: "address of the embedded broker started when --bootstrap-servers is empty, which tail then reads"},
		&cli.StringFlag{Name: "embedded-data-dir", Category: catEmbedded, Sources: env("EMBEDDED_DATA_DIR"), TakesFile: true,
			Usage: "folder where the embedded broker keeps its data (default: memory only, lost on exit)"},

		&cli.StringFlag{Name: "data-dir", Category: catOps, Sources: env("DATA_DIR"), Value: ".", TakesFile: true,
			Usage: "folder for cursor files (mount a volume here)"},
		&cli.StringFlag{Name: "metrics-listen-address", Category: catOps, Sources: env("METRICS_LISTEN_ADDRESS", "METRICS_LISTEN_ADDRESS"), Value: server.DefaultAddr,
			Usage: "address serving /metrics, /healthz, /readyz and /debug/pprof/ (empty: disabled)"},
		&cli.DurationFlag{Name: "readiness-window", Category: catOps, Sources: env("READINESS_WINDOW"), Value: 2 * time.Minute,
			Usage: "/readyz fails when input is pending and the cursor has not advanced for this long"},
		&cli.DurationFlag{Name: "shutdown-timeout", Category: catOps, Sources: env("SHUTDOWN_TIMEOUT"), Value: kafka.DefaultFlushTimeout,
			Usage: "how long a graceful shutdown waits for Kafka to acknowledge what is in flight"},
		&cli.BoolFlag{Name: "debug", Category: catLogging, Sources: env("DEBUG", "DEBUG"), Usage: "log at debug level"},
		&cli.StringFlag{Name: "log-format", Category: catLogging, Sources: env("LOG_FORMAT"), Value: logFormats[0], Usage: "log format: " + choices(logFormats)},
	}
}

// ospreyFlags choose the Osprey envelope; every producing command honours them.
func ospreyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "osprey-compatible", Category: catFormat, Sources: env("OSPREY_COMPATIBLE"),
			Usage: "wrap every event in the envelope Osprey's Kafka consumer reads"},
		&cli.StringFlag{Name: "osprey-format", Category: catFormat, Sources: env("OSPREY_FORMAT"), Value: format.OspreyWorker,
			Usage: "with --osprey-compatible: worker (the JSON envelope Osprey's worker reads) or coordinator (a MessagePack string of {\"id\",\"name\",\"data\",\"secret_data\"} JSON, what Osprey's coordinator reads)"},
		&cli.IntFlag{Name: "snowflake-worker-id", Category: catFormat, Sources: env("SNOWFLAKE_WORKER_ID"),
			Usage: "worker id (0-1023) in Osprey action_id snowflakes; give each concurrently running instance its own"},
	}
}

// firehoseFlags shape events for the relay and Tap commands: format, filters and enrichment.
func firehoseFlags() []cli.Flag {
	return append(append(ospreyFlags(), filterFlags()...), enrichFlags()...)
}

// filterFlags choose which repository events the firehose commands produce.
func filterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "metrics-collections", Category: catOps, Sources: env("METRICS_COLLECTIONS"),
			Usage: "collections kept as metric label values (patterns like app.bsky.*); others are counted as \"other\" (default: app.bsky.*, chat.bsky.*, com.atproto.*)"},

		&cli.StringSliceFlag{Name: "route", Category: catProducer, Sources: env("ROUTES"),
			Usage: "PATTERN=TOPIC, repeatable or comma separated: operations on collections PATTERN matches (patterns as for --watched-collections) go to TOPIC; the first matching route wins, the rest go to --output-topic"},
		&cli.StringFlag{Name: "route-account-events", Category: catProducer, Sources: env("ROUTE_ACCOUNT_EVENTS"), Value: routeAccountEvents[0],
			Usage: "with --route: all (account, identity and sync events go to every topic, so each is complete on its own) or main (--output-topic only)"},

		&cli.StringSliceFlag{Name: "watched-collections", Aliases: []string{"matched-collections"}, Category: catFilter,
			Sources: env("WATCHED_COLLECTIONS", "ATKAFKA_MATCHED_COLLECTIONS"),
			Usage:   "produce only operations on these collections, comma separated; app.bsky.* matches everything under app.bsky"},
		&cli.StringSliceFlag{Name: "ignored-collections", Category: catFilter, Sources: env("IGNORED_COLLECTIONS"),
			Usage: "drop operations on these collections (patterns as for --watched-collections)"},
		&cli.StringSliceFlag{Name: "watched-services", Aliases: []string{"matched-services"}, Category: catFilter,
			Sources: env("WATCHED_SERVICES", "ATKAFKA_MATCHED_SERVICES"),
			Usage:   "produce only events of accounts whose PDS host matches, comma separated; *.bsky.network matches every host under bsky.network"},
		&cli.StringSliceFlag{Name: "ignored-services", Category: catFilter, Sources: env("IGNORED_SERVICES"),
			Usage: "drop events of accounts whose PDS host matches (patterns as for --watched-services)"},
	}
}

// enrichFlags configure eventMetadata, for the firehose and labels commands.
func enrichFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "enrich", Category: catEnrich, Sources: env("ENRICH"), Value: true,
			Usage: "add eventMetadata (DID document, PDS host, handle, account age, profile) to every event with a DID (--enrich=false to turn off)"},
		&cli.StringFlag{Name: "plc-host", Category: catEnrich, Sources: env("PLC_HOST"), Value: enrich.DefaultPLCHost,
			Usage: "PLC directory serving /{did}/log/audit (one request per account); a full-network deployment should point this at a PLC mirror"},
		&cli.StringFlag{Name: "api-host", Category: catEnrich, Sources: env("API_HOST"),
			Usage: "AppView for eventMetadata.profile, e.g. https://public.api.bsky.app (empty: no profiles)"},
		&cli.DurationFlag{Name: "enrich-timeout", Category: catEnrich, Sources: env("ENRICH_TIMEOUT"), Value: enrich.DefaultLookupTimeout,
			Usage: "longest an event waits for its metadata after it was read; what is not there by then is left out (other accounts' events never wait for it)"},
		&cli.IntFlag{Name: "enrich-concurrency", Category: catEnrich, Sources: env("ENRICH_CONCURRENCY"), Value: enrich.DefaultConcurrency,
			Usage: "enrichment requests in flight at once to each of the PLC and the AppView (negative: unbounded)"},
		&cli.IntFlag{Name: "did-cache-size", Category: catEnrich, Sources: env("DID_CACHE_SIZE"), Value: enrich.DefaultCacheSize,
			Usage: "accounts (DID document and creation date) kept in memory, about 0.5 KB each"},
		&cli.DurationFlag{Name: "did-cache-ttl", Category: catEnrich, Sources: env("DID_CACHE_TTL"), Value: enrich.DefaultDocTTL, Usage: "how long a DID document is reused"},
		&cli.IntFlag{Name: "audit-cache-size", Category: catEnrich, Sources: env("AUDIT_CACHE_SIZE"), Hidden: true,
			Usage: "deprecated and ignored: creation dates live in the DID cache (--did-cache-size)"},
		&cli.DurationFlag{Name: "audit-cache-ttl", Category: catEnrich, Sources: env("AUDIT_CACHE_TTL"), Hidden: true,
			Usage: "deprecated and ignored: creation dates live in the DID cache (--did-cache-ttl)"},
		&cli.IntFlag{Name: "profile-cache-size", Category: catEnrich, Sources: env("PROFILE_CACHE_SIZE"), Value: enrich.DefaultProfileCacheSize, Usage: "profiles kept in memory"},
		&cli.DurationFlag{Name: "profile-cache-ttl", Category: catEnrich, Sources: env("PROFILE_CACHE_TTL"), Value: enrich.DefaultProfileTTL, Usage: "how long a profile is reused"},
		&cli.FloatFlag{Name: "plc-rate-limit", Category: catEnrich, Sources: env("PLC_RATE_LIMIT"), Value: enrich.DefaultPLCRate,
			Usage: "PLC requests per second at most (negative: unlimited, for a private mirror); lookups that cannot be granted before an event's deadline are not made"},
		&cli.FloatFlag{Name: "api-rate-limit", Category: catEnrich, Sources: env("API_RATE_LIMIT"), Value: enrich.DefaultAPIRate,
			Usage: "AppView requests per second at most (each asks for up to 25 profiles)"},
	}
}

func relayFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "relay-host", Sources: env("RELAY_HOST"), Value: relay.DefaultHost,
			Usage: "relay to subscribe to; /xrpc/com.atproto.sync.subscribeRepos is added"},
		&cli.StringFlag{Name: "cursor", Sources: env("CURSOR"),
			Usage: "start once from this seq instead of the saved cursor; \"live\" starts at the relay's tip"},
		&cli.IntFlag{Name: "relay-workers", Sources: env("RELAY_WORKERS"), HideDefault: true,
			Usage: "parallel decode workers (default: twice the number of CPUs, at least 4)"},
		&cli.IntFlag{Name: "max-inflight-frames", Sources: env("MAX_INFLIGHT_FRAMES"), Value: relay.DefaultMaxInFlight,
			Usage: "frames read but not yet acknowledged by Kafka before reading pauses"},
		&cli.StringFlag{Name: "verify-commits", Sources: env("VERIFY_COMMITS"), Value: string(verify.ModeOff),
			Usage: "Sync 1.1 verification of #commit and #sync frames (signature with the account's key from --plc-host, ops against the MST diff): off, log (count and log failures, produce anyway) or strict (dead-letter failures)"},
	}
}

func tapFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tap-host", Sources: env("TAP_HOST"), Value: tap.DefaultHost, Usage: "Tap to consume; /channel is added"},
		&cli.BoolFlag{Name: "disable-acks", Sources: env("DISABLE_ACKS"),
			Usage: "do not acknowledge events to Tap (only when Tap runs with --disable-acks; events may be lost on a crash)"},
		&cli.IntFlag{Name: "tap-workers", Sources: env("TAP_WORKERS"), Value: tap.DefaultWorkers, Usage: "parallel workers turning Tap events into records"},
		&cli.IntFlag{Name: "tap-max-inflight", Sources: env("TAP_MAX_INFLIGHT"), Value: tap.DefaultMaxInFlight,
			Usage: "Tap events read but not yet handed to Kafka (most waiting for their account's metadata) before reading pauses"},
		&cli.StringFlag{Name: "tap-admin-password", Sources: env("TAP_ADMIN_PASSWORD"), HideDefault: true,
			Usage: "Tap's --admin-password, sent as HTTP Basic auth (user admin)"},
	}
}

func ozoneFlags() []cli.Flag {
	return append(ospreyFlags(), []cli.Flag{
		&cli.StringFlag{Name: "pds-host", Sources: env("OZONE_PDS_HOST"), Usage: "PDS of the moderator account, e.g. https://bsky.social"},
		&cli.StringFlag{Name: "identifier", Sources: env("OZONE_IDENTIFIER"), Usage: "moderator account handle or DID"},
		&cli.StringFlag{Name: "password", Sources: env("OZONE_PASSWORD"), HideDefault: true,
			Usage: "moderator account password or app password (prefer the environment variable or --password-file)"},
		&cli.StringFlag{Name: "password-file", Sources: env("OZONE_PASSWORD_FILE"), TakesFile: true, Usage: "file holding the moderator password"},
		&cli.StringFlag{Name: "labeler-did", Sources: env("OZONE_LABELER_DID"), Usage: "DID of the Ozone labeler service"},
		&cli.DurationFlag{Name: "poll-interval", Sources: env("OZONE_POLL_INTERVAL"), Value: ozone.DefaultPollInterval,
			Usage: "wait between polls once all events are read"},
		&cli.StringFlag{Name: "cursor-file", Sources: env("OZONE_CURSOR_FILE"), Value: "ozone-cursor.txt", TakesFile: true,
			Usage: "cursor file, one per Kafka cluster: .kafka-<cluster id> is added before its extension; a relative path is inside --data-dir"},
	}...)
}

func labelsFlags() []cli.Flag {
	return append(append(ospreyFlags(), enrichFlags()...), []cli.Flag{
		&cli.StringSliceFlag{Name: "labeler", Sources: env("LABELERS"),
			Usage: "labeler DIDs, comma separated; each is resolved (with --plc-host) to the #atproto_labeler endpoint of its DID document at every connection"},
		&cli.StringSliceFlag{Name: "labeler-host", Sources: env("LABELER_HOSTS"),
			Usage: "labelers given by host (wss://..., comma separated) instead of DID; /xrpc/com.atproto.label.subscribeLabels is added"},
		&cli.StringFlag{Name: "labeler-cursor", Sources: env("LABELER_CURSOR"),
			Usage: "start every labeler once from this seq instead of its saved cursor: 0 replays each labeler's whole history, \"live\" starts at its tip"},
		&cli.StringFlag{Name: "verify-labels", Sources: env("VERIFY_LABELS"), Value: "off",
			Usage: "check each label's signature with the #atproto_label key of its src (from --plc-host; fetched again once on failure): off, log (count and log failures, produce anyway) or strict (dead-letter failures with the reason)"},
		&cli.BoolFlag{Name: "include-sig", Sources: env("LABELS_INCLUDE_SIG"),
			Usage: "carry each label's signature in its record, as {\"$bytes\": base64}"},
	}...)
}

// backfillFlags name the backfill's topics and group; plan, run and status must agree on them.
func backfillFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "backfill-topic", Sources: env("BACKFILL_TOPIC"),
			Usage: "compacted work topic: one record per repository, keyed by DID (default: <output-topic>.backfill)"},
		&cli.StringFlag{Name: "backfill-failed-topic", Sources: env("BACKFILL_FAILED_TOPIC"),
			Usage: "topic of the repositories that failed for good, with the reason and their work record (default: <backfill-topic>.failed)"},
		&cli.StringFlag{Name: "backfill-group", Sources: env("BACKFILL_GROUP"), Value: "atkafka-backfill",
			Usage: "consumer group of the backfill run instances; its committed offsets are the backfill's progress"},
	}
}

func backfillPlanFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "backfill-source", Sources: env("BACKFILL_SOURCE"), Value: "https://bsky.network",
			Usage: "relay (or PDS) whose com.atproto.sync.listRepos lists the repositories; with exactly one --watched-collections NSID (no pattern), listReposByCollection lists only those holding it"},
		&cli.IntFlag{Name: "backfill-partitions", Sources: env("BACKFILL_PARTITIONS"), Value: 64,
			Usage: "partitions of the work topic when plan creates it: the most run instances that can share the work"},
		&cli.IntFlag{Name: "backfill-page-size", Sources: env("BACKFILL_PAGE_SIZE"), Value: backfill.DefaultPageSize, Usage: "repositories per listRepos page"},
	}
}

func backfillRunFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "backfill-concurrency", Sources: env("BACKFILL_CONCURRENCY"), Value: backfill.DefaultConcurrency,
			Usage: "repositories one instance loads at once (and commits together)"},
		&cli.IntFlag{Name: "backfill-host-concurrency", Sources: env("BACKFILL_HOST_CONCURRENCY"), Value: backfill.DefaultHostConcurrency,
			Usage: "getRepo requests in flight to one PDS host"},
		&cli.FloatFlag{Name: "backfill-host-rate", Sources: env("BACKFILL_HOST_RATE"), Value: backfill.DefaultHostRate,
			Usage: "getRepo requests per second to one PDS host at most (0: unlimited); 429 and RateLimit-* headers slow it further"},
		&cli.DurationFlag{Name: "backfill-retry-window", Sources: env("BACKFILL_RETRY_WINDOW"), Value: backfill.DefaultRetryWindow,
			Usage: "how long a repository whose PDS fails (unreachable, 5xx, rate limited) is retried before it goes to the failed topic"},
		&cli.BoolFlag{Name: "backfill-exactly-once", Sources: env("BACKFILL_EXACTLY_ONCE"), Value: true,
			Usage: "commit each batch's records with its work offsets in one Kafka transaction (read_committed consumers see every repository once); false: at least once, a crash repeats the batch in flight"},
		&cli.DurationFlag{Name: "backfill-transaction-timeout", Sources: env("BACKFILL_TRANSACTION_TIMEOUT"), Value: backfill.DefaultTransactionTimeout,
			Usage: "Kafka transaction timeout: a batch must commit within it, and a killed instance's open transaction holds its partitions this long"},
		&cli.DurationFlag{Name: "backfill-transaction-time", Sources: env("BACKFILL_TRANSACTION_TIME"), HideDefault: true,
			Usage: "how long a batch produces before it commits (default: a quarter of --backfill-transaction-timeout; at most half of it); a repository still producing then stops and its rest is loaded in a later transaction (one still loading, whole), and read_committed consumers of the output topic wait at most this long for a batch"},
		&cli.DurationFlag{Name: "backfill-session-timeout", Sources: env("BACKFILL_SESSION_TIMEOUT"), Value: backfill.DefaultSessionTimeout,
			Usage: "how long the group waits for a silent instance before giving its partitions to the others"},
		&cli.IntFlag{Name: "backfill-memory-limit", Sources: env("BACKFILL_MEMORY_LIMIT"), Value: backfill.DefaultMemoryLimit,
			Usage: "repository size held in memory; larger CARs are written to a temporary file and mapped, so memory stays bounded (about --backfill-concurrency × this + 32 MB of records in flight)"},
		&cli.StringFlag{Name: "verify-commits", Sources: env("VERIFY_COMMITS"), Value: "off",
			Usage: "check each repository's commit signature with the account's key: off, log (count and log failures, produce anyway) or strict (send the repository to the failed topic)"},
	}
}

func backfillStatusFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "interval", Value: 10 * time.Second, Usage: "how long status watches the offsets to measure rates (0: no rates)"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	}
}

func tailFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "topic", Sources: env("TAIL_TOPIC"), Usage: "topic to read (default: --output-topic)"},
		&cli.BoolFlag{Name: "json", Usage: "print raw record values instead of one-line summaries"},
		&cli.StringFlag{Name: "collection", Usage: "show only operations on this collection"},
		&cli.StringFlag{Name: "did", Usage: "show only events of this DID"},
		&cli.BoolFlag{Name: "from-beginning", Usage: "read the topic from its start instead of new records only"},
	}
}
