// Package metrics declares every Prometheus metric atkafka exports. Keeping them in one place keeps their
// names and labels (a contract with existing dashboards) from drifting, and keeps label cardinality bounded:
// no DIDs or rkeys ever become labels, and collections outside the allow-list fold into "other".
package metrics

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

const namespace = "atkafka"

// Registry holds atkafka's metrics plus the Go runtime and process collectors.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	Registry.MustRegister(c)
	return c
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	Registry.MustRegister(g)
	return g
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	Registry.MustRegister(h)
	return h
}

// The contract metrics, named as existing dashboards use them.
var (
	HandledEvents  = counterVec("handled_events", "Events received from the source and handled, by action name and collection.", "action_name", "collection")
	ProducedEvents = counterVec("produced_events", "Records Kafka acknowledged (status=ok) or that failed for good (status=error).", "status")
	PLCRequests    = counterVec("plc_requests", "Lookups against the PLC directory (kind: doc|audit), by status and whether the cache answered.", "kind", "status", "cached")
	APIRequests    = counterVec("api_requests", "Lookups against the AppView API (kind: profile), by status and whether the cache answered.", "kind", "status", "cached")
	CacheSize      = gaugeVec("cache_size", "Entries in each enrichment cache.", "kind")
	AcksSent       = counterVec("acks_sent", "Acknowledgements sent to Tap, by status.", "status")
)

// Operational metrics: enough to answer "is it keeping up, and is anything lost".
var (
	CursorCurrent   = gaugeVec("cursor_current", "Latest source position read (relay seq, Tap event id, Ozone event id).", "source")
	CursorCommitted = gaugeVec("cursor_committed", "Source position up to which every record is acknowledged by Kafka and persisted.", "source")
	LagSeconds      = gaugeVec("lag_seconds", "Seconds between the newest handled event's time and now.", "source")
	FilteredEvents  = counterVec("filtered_events", "Events not produced because a filter dropped them, by reason.", "reason")
	FilterFailOpen  = counterVec("filter_fail_open_events", "Events kept although the service filter could not resolve the account's PDS (PLC unreachable or failing), by filter.", "filter")
	DeadLettered    = counterVec("dead_lettered_events", "Inputs written to the dead-letter topic, by reason.", "source", "reason")
	DecodeErrors    = counterVec("decode_errors", "Inputs that could not be decoded, by kind.", "source", "kind")
	Reconnects      = counterVec("reconnects", "Reconnections to the source, by reason.", "source", "reason")
	Transactions    = counterVec("transactions", "Kafka transactions of the exactly-once producer, by status (committed|aborted).", "status")
	SourceEvents    = counterVec("source_events", "Source-level occurrences worth counting (outdated cursor, seq gap, error frames), by kind.", "source", "kind")
	InFlightRecords = gaugeVec("inflight_records", "Records handed to Kafka and not yet acknowledged.", "topic")
	InFlightBytes   = gaugeVec("inflight_bytes", "Bytes of records handed to Kafka and not yet acknowledged.", "topic")
	ProduceLatency  = histogramVec("produce_latency_seconds", "Time from receiving an input to Kafka acknowledging its last record.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "source")
	EnrichFailures = counterVec("enrich_failures", "Events produced without some eventMetadata because a lookup failed or timed out, by kind.", "kind")
	EnrichMissing  = counterVec("enrich_missing_records", "Records produced without some eventMetadata, by kind (doc|audit|profile) and reason (deadline: the lookup did not answer within --enrich-timeout; budget: the rate limit or concurrency could not grant a request in time; error).", "kind", "reason")
	EnrichLookups  = histogramVec("enrich_lookup_seconds", "Latency of enrichment requests to each endpoint (plc|api|did:web), by status.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}, "endpoint", "status")
	EnrichInFlight     = gaugeVec("enrich_lookups_in_flight", "Enrichment requests in flight to each endpoint.", "endpoint")
	OzoneAuthRefresh   = counterVec("ozone_auth_refreshes", "Ozone session refreshes and re-logins, by kind and status.", "kind", "status")
	OzonePollLatency   = histogramVec("ozone_poll_latency_seconds", "Latency of one queryEvents request.", prometheus.DefBuckets)
	OzoneLastEvent     = gaugeVec("ozone_last_event", "Id (field=id) and creation time as Unix seconds (field=created_at) of the last Ozone event Kafka acknowledged.", "field")
	VerifyFailures     = counterVec("verify_failures", "Relay #commit and #sync frames that failed Sync 1.1 verification (--verify-commits), by reason.", "reason")
	LabelsProduced     = counterVec("labels_produced", "Labels Kafka acknowledged, by labeler and label value (values past the first 256 of a run count as \"other\").", "labeler", "val")
	LabelLagSeconds    = gaugeVec("label_lag_seconds", "Seconds between the cts of a labeler's newest label Kafka acknowledged and that moment.", "labeler")
	LabelerConnected   = gaugeVec("labeler_connected", "1 while connected to the labeler's subscribeLabels, else 0.", "labeler")
	LabelerCursor      = gaugeVec("labeler_cursor", "A labeler's seq: newest read (kind=current), and up to which Kafka acknowledged every label (kind=committed).", "labeler", "kind")
	LabelerReconnects  = counterVec("labeler_reconnects", "Reconnections to a labeler, by reason.", "labeler", "reason")
	LabelVerifications = counterVec("label_verifications", "Labels checked by --verify-labels, by labeler and result (ok|failed|unsigned|key_unavailable).", "labeler", "result")
	VerifiedFrames     = counterVec("verified_frames", "Relay frames checked by --verify-commits, by kind (commit|sync|repo, the last a backfilled repository) and result (ok|unverifiable|key_unavailable|failed).", "kind", "result")
)

// Backfill metrics (atkafka backfill plan|run): progress of the whole backfill is read from Kafka by
// `atkafka backfill status`; these say what one instance is doing.
var (
	BackfillPlanned = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "backfill_planned_repos",
		Help: "Work records (repositories) the plan committed to the work topic."})
	BackfillRepos   = counterVec("backfill_repos", "Repositories a backfill run finished, by outcome (loaded|inactive|filtered|failed|retried), or put back: split over transactions (split), deferred past its batch's producing time (deferred).", "outcome")
	BackfillRecords = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "backfill_records",
		Help: "Records of backfilled repositories produced (committed or not: an aborted transaction's are produced again)."})
	BackfillFetchErrors = counterVec("backfill_fetch_errors", "getRepo attempts that failed, by reason (rate_limited|server_error|unreachable|not_found|…).", "reason")
	BackfillFetch       = histogramVec("backfill_fetch_seconds", "Time to download one repository from its PDS (getRepo), waiting for the host's limits included.",
		[]float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300})
	BackfillRepoBytes = histogramVec("backfill_repo_bytes", "Size of downloaded repository CARs.",
		prometheus.ExponentialBuckets(1<<10, 4, 12))
	BackfillInFlight = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "backfill_repos_in_flight",
		Help: "Repositories being fetched or produced."})
)

func init() { Registry.MustRegister(BackfillPlanned, BackfillRecords, BackfillInFlight) }

var (
	collectionsMu sync.RWMutex
	collections   = map[string]bool{}
	collectionPfx []string
)

// SetCollectionLabels sets the collections kept as label values; others are reported as "other". An entry ending
// in ".*" keeps every collection under that prefix. Called once at start-up.
func SetCollectionLabels(allow []string) {
	collectionsMu.Lock()
	defer collectionsMu.Unlock()
	collections = map[string]bool{}
	collectionPfx = nil
	handledMu.Lock()
	handled = map[handledKey]prometheus.Counter{}
	handledMu.Unlock()
	for _, a := range allow {
		if p, ok := strings.CutSuffix(a, ".*"); ok {
			collectionPfx = append(collectionPfx, p+".")
			continue
		}
		collections[a] = true
	}
}

// DefaultCollectionLabels are the collections kept as labels unless configured otherwise.
var DefaultCollectionLabels = []string{"app.bsky.*", "chat.bsky.*", "com.atproto.*"}

func init() { SetCollectionLabels(DefaultCollectionLabels) }

// CollectionLabel folds a collection NSID into a bounded label value.
func CollectionLabel(collection string) string {
	if collection == "" {
		return ""
	}
	collectionsMu.RLock()
	defer collectionsMu.RUnlock()
	if collections[collection] {
		return collection
	}
	for _, p := range collectionPfx {
		if strings.HasPrefix(collection, p) {
			return collection
		}
	}
	return "other"
}

// maxHandledChildren bounds the cache of HandledEvent: collections come from the network, and the cache must not
// grow with every made-up NSID (past the bound, lookups take the slower label path).
const maxHandledChildren = 4096

type handledKey struct{ action, collection string }

var (
	handledMu sync.RWMutex
	handled   = map[handledKey]prometheus.Counter{}
)

// HandledEvent returns the HandledEvents counter of an event, its collection folded as by CollectionLabel. It
// is on the per-event path: a read-locked map hit replaces the label hashing and folding of WithLabelValues.
func HandledEvent(action, collection string) prometheus.Counter {
	k := handledKey{action, collection}
	handledMu.RLock()
	c, ok := handled[k]
	handledMu.RUnlock()
	if ok {
		return c
	}
	c = HandledEvents.WithLabelValues(action, CollectionLabel(collection))
	handledMu.Lock()
	if len(handled) < maxHandledChildren {
		handled[k] = c
	}
	handledMu.Unlock()
	return c
}

// Enrich is the Prometheus enrich.Observer: plc_requests (documents) and api_requests (profiles),
// enrich_failures, cache_size, enrich_lookup_seconds and enrich_lookups_in_flight.
type Enrich struct{}

// Lookups counts in plc_requests the lookups of documents, and in api_requests those of profiles.
func (Enrich) Lookups(kind, status string, cached bool) func() {
	vec := PLCRequests
	if kind == "profile" {
		vec = APIRequests
	}
	return vec.WithLabelValues(kind, status, strconv.FormatBool(cached)).Inc
}

// Failures counts in enrich_failures.
func (Enrich) Failures(kind string) func() { return EnrichFailures.WithLabelValues(kind).Inc }

// CacheSize sets cache_size.
func (Enrich) CacheSize(kind string) func(entries int) {
	g := CacheSize.WithLabelValues(kind)
	return func(n int) { g.Set(float64(n)) }
}

// Requests observes enrich_lookup_seconds.
func (Enrich) Requests(endpoint, status string) func(time.Duration) {
	o := EnrichLookups.WithLabelValues(endpoint, status)
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}

// InFlight adds to enrich_lookups_in_flight.
func (Enrich) InFlight(endpoint string) func(delta int) {
	g := EnrichInFlight.WithLabelValues(endpoint)
	return func(d int) { g.Add(float64(d)) }
}

// Verify is the Prometheus verify.Observer: verified_frames and verify_failures.
type Verify struct{}

// Verified counts in verified_frames.
func (Verify) Verified(kind, result string) { VerifiedFrames.WithLabelValues(kind, result).Inc() }

// Failed counts in verify_failures.
func (Verify) Failed(reason string) { VerifyFailures.WithLabelValues(reason).Inc() }

// Pipeline is the Prometheus transform.Observer: handled_events (collections folded by CollectionLabel),
// filtered_events, filter_fail_open_events and enrich_missing_records.
type Pipeline struct{}

// Handled counts in handled_events.
func (Pipeline) Handled(action, collection string) { HandledEvent(action, collection).Inc() }

// Filtered counts in filtered_events.
func (Pipeline) Filtered(rule string) { FilteredEvents.WithLabelValues(rule).Inc() }

// FailOpen counts in filter_fail_open_events.
func (Pipeline) FailOpen(rule string) { FilterFailOpen.WithLabelValues(rule).Inc() }

// MissingMetadata counts in enrich_missing_records.
func (Pipeline) MissingMetadata(kind, reason string, records int) {
	EnrichMissing.WithLabelValues(kind, reason).Add(float64(records))
}

// sourceMetrics are the children of the metrics every source sets per event, under its source label, resolved
// once so that an event costs no label lookup.
type sourceMetrics struct {
	current, committed, lag prometheus.Gauge
	latency                 prometheus.Observer
}

func newSourceMetrics(source string) sourceMetrics {
	return sourceMetrics{current: CursorCurrent.WithLabelValues(source), committed: CursorCommitted.WithLabelValues(source),
		lag: LagSeconds.WithLabelValues(source), latency: ProduceLatency.WithLabelValues(source)}
}

var tapMetrics, ozoneMetrics, relayMetrics = newSourceMetrics("tap"), newSourceMetrics("ozone"), newSourceMetrics("relay")

// Tap is the Prometheus tap.Observer: cursor_current, cursor_committed, lag_seconds, produce_latency_seconds,
// acks_sent, decode_errors, dead_lettered_events and reconnects, with source="tap".
type Tap struct{}

// Read sets cursor_current.
func (Tap) Read(id uint64) { tapMetrics.current.Set(float64(id)) }

// Acked sets cursor_committed.
func (Tap) Acked(id uint64) { tapMetrics.committed.Set(float64(id)) }

// Lag sets lag_seconds.
func (Tap) Lag(d time.Duration) { tapMetrics.lag.Set(d.Seconds()) }

// Delivered observes produce_latency_seconds.
func (Tap) Delivered(d time.Duration) { tapMetrics.latency.Observe(d.Seconds()) }

// Acks counts in acks_sent.
func (Tap) Acks(status string, n int) { AcksSent.WithLabelValues(status).Add(float64(n)) }

// DecodeError counts in decode_errors.
func (Tap) DecodeError(reason string) { DecodeErrors.WithLabelValues("tap", reason).Inc() }

// DeadLettered counts in dead_lettered_events.
func (Tap) DeadLettered(reason string) { DeadLettered.WithLabelValues("tap", reason).Inc() }

// Reconnect counts in reconnects.
func (Tap) Reconnect(reason string) { Reconnects.WithLabelValues("tap", reason).Inc() }

// Cursor returns the latest position read and the position committed of source (the label of cursor_current and
// cursor_committed: "relay" or "ozone"), for a readiness check that needs no access to the source's internals
// (server.Advancing).
func Cursor(source string) func() (read, committed int64) {
	current, committed := CursorCurrent.WithLabelValues(source), CursorCommitted.WithLabelValues(source)
	return func() (int64, int64) { return gaugeValue(current), gaugeValue(committed) }
}

func gaugeValue(g prometheus.Gauge) int64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	// Positions are integers below 2^53 (relay seqs, Ozone ids), so the float64 gauge holds them exactly.
	return int64(m.GetGauge().GetValue())
}

// Children of produced_events, resolved once: Kafka.Produced runs per record.
var (
	producedOK    = ProducedEvents.WithLabelValues("ok")
	producedError = ProducedEvents.WithLabelValues("error")
)

// Kafka is the Prometheus kafka.Observer: produced_events, inflight_records, inflight_bytes and transactions.
type Kafka struct{}

// Produced counts in produced_events.
func (Kafka) Produced(status string, n int) {
	switch status {
	case "ok":
		producedOK.Add(float64(n))
	case "error":
		producedError.Add(float64(n))
	default:
		ProducedEvents.WithLabelValues(status).Add(float64(n))
	}
}

// InFlight adds to inflight_records and inflight_bytes.
func (Kafka) InFlight(topic string) func(records, bytes int64) {
	r, b := InFlightRecords.WithLabelValues(topic), InFlightBytes.WithLabelValues(topic)
	return func(records, bytes int64) {
		r.Add(float64(records))
		b.Add(float64(bytes))
	}
}

// Transaction counts in transactions.
func (Kafka) Transaction(status string) { Transactions.WithLabelValues(status).Inc() }

// The children of the Ozone source's own metrics, resolved once.
var (
	ozonePollLatency   = OzonePollLatency.WithLabelValues()
	ozoneLastID        = OzoneLastEvent.WithLabelValues("id")
	ozoneLastCreatedAt = OzoneLastEvent.WithLabelValues("created_at")
)

// Ozone is the Prometheus ozone.Observer: handled_events (without a collection), cursor_current,
// cursor_committed, lag_seconds, produce_latency_seconds, decode_errors and dead_lettered_events with
// source="ozone", ozone_poll_latency_seconds and ozone_last_event.
type Ozone struct{}

// Read counts in handled_events and sets cursor_current.
func (Ozone) Read(action string, id int64) {
	HandledEvent(action, "").Inc()
	ozoneMetrics.current.Set(float64(id))
}

// Lag sets lag_seconds.
func (Ozone) Lag(d time.Duration) { ozoneMetrics.lag.Set(d.Seconds()) }

// Polled observes ozone_poll_latency_seconds.
func (Ozone) Polled(d time.Duration) { ozonePollLatency.Observe(d.Seconds()) }

// Delivered observes produce_latency_seconds.
func (Ozone) Delivered(d time.Duration) { ozoneMetrics.latency.Observe(d.Seconds()) }

// Committed sets cursor_committed and ozone_last_event.
func (Ozone) Committed(id int64, createdAt time.Time) {
	ozoneMetrics.committed.Set(float64(id))
	ozoneLastID.Set(float64(id))
	ozoneLastCreatedAt.Set(float64(createdAt.UnixMilli()) / 1000)
}

// DecodeError counts in decode_errors.
func (Ozone) DecodeError(kind string) { DecodeErrors.WithLabelValues("ozone", kind).Inc() }

// DeadLettered counts in dead_lettered_events.
func (Ozone) DeadLettered(kind string) { DeadLettered.WithLabelValues("ozone", kind).Inc() }

// Auth counts in OzoneAuthRefresh.
func (Ozone) Auth(kind string, ok bool) {
	status := "error"
	if ok {
		status = "ok"
	}
	OzoneAuthRefresh.WithLabelValues(kind, status).Inc()
}

// Relay is the Prometheus relay.Observer: cursor_current, cursor_committed, lag_seconds,
// produce_latency_seconds, decode_errors, dead_lettered_events, reconnects and source_events, with
// source="relay".
type Relay struct{}

// Read sets cursor_current.
func (Relay) Read(seq int64) { relayMetrics.current.Set(float64(seq)) }

// Committed sets cursor_committed.
func (Relay) Committed(seq int64) { relayMetrics.committed.Set(float64(seq)) }

// Lag sets lag_seconds.
func (Relay) Lag(d time.Duration) { relayMetrics.lag.Set(d.Seconds()) }

// Delivered observes produce_latency_seconds.
func (Relay) Delivered(d time.Duration) { relayMetrics.latency.Observe(d.Seconds()) }

// DecodeError counts in decode_errors.
func (Relay) DecodeError(kind string) { DecodeErrors.WithLabelValues("relay", kind).Inc() }

// DeadLettered counts in dead_lettered_events.
func (Relay) DeadLettered(reason string) { DeadLettered.WithLabelValues("relay", reason).Inc() }

// Reconnect counts in reconnects.
func (Relay) Reconnect(reason string) { Reconnects.WithLabelValues("relay", reason).Inc() }

// SourceEvent counts in source_events.
func (Relay) SourceEvent(kind string) { SourceEvents.WithLabelValues("relay", kind).Inc() }

// maxLabelValues bounds the label values kept as val of labels_produced: a labeler may invent values without
// end.
const maxLabelValues = 256

var (
	labelValuesMu sync.Mutex
	labelValues   = map[string]bool{}
)

// labelValue is v as a val label: itself while fewer than maxLabelValues values were seen, else "other".
func labelValue(v string) string {
	labelValuesMu.Lock()
	defer labelValuesMu.Unlock()
	if labelValues[v] {
		return v
	}
	if len(labelValues) < maxLabelValues {
		labelValues[v] = true
		return v
	}
	return "other"
}

// labelsLatency is produce_latency_seconds{source=labels}, resolved once: it is observed per frame.
var labelsLatency = ProduceLatency.WithLabelValues("labels")

// Labels is the Prometheus labels.Observer: produce_latency_seconds, decode_errors, dead_lettered_events and
// source_events with source="labels", and through Labeler the per-labeler metrics.
type Labels struct{}

// Cursor sets labeler_cursor (kind=current, kind=committed).
func (Labels) Cursor(labeler string) (read, committed func(seq int64)) {
	r, c := LabelerCursor.WithLabelValues(labeler, "current"), LabelerCursor.WithLabelValues(labeler, "committed")
	return func(seq int64) { r.Set(float64(seq)) }, func(seq int64) { c.Set(float64(seq)) }
}

// Connected sets labeler_connected.
func (Labels) Connected(labeler string) func(bool) {
	g := LabelerConnected.WithLabelValues(labeler)
	return func(up bool) {
		if up {
			g.Set(1)
			return
		}
		g.Set(0)
	}
}

// Lag sets label_lag_seconds.
func (Labels) Lag(labeler string) func(time.Duration) {
	g := LabelLagSeconds.WithLabelValues(labeler)
	return func(d time.Duration) { g.Set(d.Seconds()) }
}

// Reconnect counts in labeler_reconnects.
func (Labels) Reconnect(labeler, reason string) {
	LabelerReconnects.WithLabelValues(labeler, reason).Inc()
}

// Produced counts in labels_produced, the value folded by labelValue.
func (Labels) Produced(labeler, val string) {
	LabelsProduced.WithLabelValues(labeler, labelValue(val)).Inc()
}

// Verified counts in label_verifications.
func (Labels) Verified(labeler, result string) {
	LabelVerifications.WithLabelValues(labeler, result).Inc()
}

// Delivered observes produce_latency_seconds.
func (Labels) Delivered(d time.Duration) { labelsLatency.Observe(d.Seconds()) }

// DecodeError counts in decode_errors.
func (Labels) DecodeError(kind string) { DecodeErrors.WithLabelValues("labels", kind).Inc() }

// DeadLettered counts in dead_lettered_events.
func (Labels) DeadLettered(reason string) { DeadLettered.WithLabelValues("labels", reason).Inc() }

// SourceEvent counts in source_events.
func (Labels) SourceEvent(kind string) { SourceEvents.WithLabelValues("labels", kind).Inc() }

// Backfill is the Prometheus backfill.Observer: the backfill_* metrics, transactions, and dead_lettered_events
// with source="backfill".
type Backfill struct{}

// Planned counts in backfill_planned_repos.
func (Backfill) Planned(repos int) { BackfillPlanned.Add(float64(repos)) }

// Repo counts in backfill_repos.
func (Backfill) Repo(outcome string) { BackfillRepos.WithLabelValues(outcome).Inc() }

// Loading adds to backfill_repos_in_flight.
func (Backfill) Loading(delta int) { BackfillInFlight.Add(float64(delta)) }

// Fetched observes backfill_fetch_seconds and backfill_repo_bytes.
func (Backfill) Fetched(d time.Duration, bytes int) {
	BackfillFetch.WithLabelValues().Observe(d.Seconds())
	BackfillRepoBytes.WithLabelValues().Observe(float64(bytes))
}

// FetchError counts in backfill_fetch_errors.
func (Backfill) FetchError(reason string) { BackfillFetchErrors.WithLabelValues(reason).Inc() }

// Produced counts in backfill_records.
func (Backfill) Produced(records int) { BackfillRecords.Add(float64(records)) }

// DeadLettered counts in dead_lettered_events.
func (Backfill) DeadLettered(reason string) { DeadLettered.WithLabelValues("backfill", reason).Inc() }

// Transaction counts in transactions.
func (Backfill) Transaction(status string) { Transactions.WithLabelValues(status).Inc() }
