// Package tap carries the events of an indigo Tap (github.com/bluesky-social/indigo/cmd/tap) into Kafka, acking
// each one to Tap only after Kafka acknowledged its records.
//
// A Source connects to Tap's /channel websocket, where Tap sends one JSON event per text message and expects
// {"type":"ack","id":N} back once the event is safely handled. Tap keeps every unacked event in its database and
// sends it again after its --retry-timeout (default 60s), also across its own restarts, so delivery is
// at-least-once: a crash of atkafka at any point loses nothing, and a redelivered event produces a record with the
// same key and headers as the first copy.
//
// # Events
//
// A record event becomes one operation event (action name operation#create, #update or #delete) carrying uri,
// path, cid and the record exactly as Tap sent it (atproto JSON, not re-encoded), plus "live": false for records
// from a backfill or resync and true for records from the firehose.
//
// The event's timestamp is chosen, in this order, from:
//   - the record's createdAt, when it is an RFC 3339 date-time;
//   - the rkey, when it is a TID (the time its author's client minted it);
//   - the time atkafka received the event.
//
// It is rendered in UTC with milliseconds ("2006-01-02T15:04:05.000Z"). Deletes carry no record, so their
// timestamp comes from a TID rkey: the creation time of the deleted record, not the time of the delete.
//
// An identity event (Tap reports handle and account status changes together) becomes two records in one message,
// both timestamped with the receive time: an identity event (handle, isActive, status) and an account event
// (active, and status unless it is "active", as on the relay). The account event is emitted even when only the
// handle changed: it states the account's current status rather than a change, so a repeat is harmless, and it
// lets consumers and rules written for relay mode's account action (takedowns, deactivations) work unchanged.
// Tap reports handles verified both ways (an unverifiable one as "handle.invalid"), and queues identity events as
// backfill (not live) events, which Tap's per-DID ack barrier does not order: when Tap redelivers a status change,
// the copy can arrive after a later change, so consumers that need the current status should not rely on the
// last identity event alone.
//
// # Kafka records
//
// Every record is keyed by the DID, so a DID's records stay in one partition and in order. Headers identify the
// source event: did, and for record events rev, collection, rkey and live ("true" or "false"). Tap's event id is
// an in-memory counter that restarts when Tap's outbox is empty; it is never a key or header, and consumers
// should deduplicate on did + rev + collection + rkey.
//
// # Delivery
//
// A reader goroutine decodes each message and hands it to one of Config.Workers workers chosen by a hash of its
// DID, so a DID's events are sent to Kafka in the order Tap sent them. Workers filter, enrich and render events
// and hand them to the sink; the sink's Done callback queues the ack, and a single writer goroutine (websocket
// writes must not be concurrent) writes queued acks as they come. The ack queue never blocks: Done only appends to
// it. So an ack never waits behind a full worker queue, a slow record of another DID, or the reader, and Tap's
// rule of holding a DID's next live event until the previous one is acked cannot deadlock against atkafka.
//
// Duplicates are normal: Tap deletes acked events in batches (every 1000 acks or 10 seconds), so after a Tap
// restart it sends again events that were already acked, besides those it never got an ack for.
//
// Events dropped by a filter are acked at once. When Kafka refuses a record for good, the event is not acked:
// Tap sends it again after its retry timeout. When the connection drops, acks still pending for its events are
// discarded, since Tap's ids are only meaningful on the connection (and Tap process) that sent them; Tap
// redelivers those events after its retry timeout. Run reconnects with capped exponential backoff.
//
// A message that is not valid JSON, or not a well-formed Tap event, is counted in atkafka_decode_errors, logged
// and written to the dead-letter topic with the raw bytes; its id is acked once the dead-letter record is in
// Kafka. The id is read from the decoded event or, when the JSON does not parse, from the `{"id":N,` prefix Tap
// always writes first. When even that cannot be read, the event cannot be acked: Tap sends it again after every
// retry timeout, and each copy is dead-lettered again, until it is removed from Tap.
//
// With Config.DisableAcks (Tap started with --disable-acks), Tap counts an event as delivered once written to the
// socket, so events in flight when atkafka or Kafka fails are lost; Run says so in a warning.
//
// # Metrics
//
// atkafka_acks_sent counts acks by status: ok (written to Tap), kafka_error (withheld because Kafka refused a
// record; Tap redelivers) and disconnected (discarded because the connection that carried the event closed).
// atkafka_cursor_current{source="tap"} is the last event id read, atkafka_lag_seconds{source="tap"} the age of
// the last live record by its commit rev, and atkafka_produce_latency_seconds{source="tap"} the time from
// receiving an event to Kafka acknowledging its records.
package tap
