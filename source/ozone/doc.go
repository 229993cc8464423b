// Package ozone carries an Ozone labeler's moderation events into Kafka.
//
// A Source logs in to a moderator's PDS and polls tools.ozone.moderation.queryEvents through it (the PDS proxies
// the call to the labeler named in the atproto-proxy header). Each modEventView is produced unchanged as one
// record keyed by its decimal event id, and the cursor file moves only past events Kafka acknowledged.
//
// # How Ozone pages events
//
// Read from @atproto/ozone (mod-service getEvents and db/pagination TimeIdKeyset): events are ordered by
// (createdAt, id), and the response cursor is "<createdAt in Unix milliseconds>::<id>" of the last event of the
// page. A request with that cursor and sortDirection=asc returns the events strictly after it,
// (createdAt, id) > (cursor), so events sharing one createdAt millisecond are told apart by their id: nothing is
// skipped or repeated. createdAfter and createdBefore, by contrast, are inclusive string comparisons against the
// stored text (always JavaScript's toISOString, millisecond precision, "Z"): createdAfter cannot resume in the
// middle of a millisecond, which is why bridges that resumed with createdAfter = last + 1 ms lost events, and a
// value written another way (no fraction: "…:48Z" sorts after "…:48.500Z") silently skips a whole second. This
// package never sends createdAfter, and writes createdBefore exactly as Ozone stores createdAt.
//
// Ozone stamps createdAt before its database transaction commits, so under concurrent moderation an event can
// become visible after a later-stamped one. A Source therefore only reads events older than Config.SettleDelay
// (createdBefore = now - delay), so that the cursor never passes an event that is still being committed. (Against
// the reference Ozone, 40 parallel emits already produce ids out of createdAt order.)
//
// # Delivery
//
// Every event becomes one sink message. The cursor file moves only over events Kafka acknowledged, in order
// (ack.Watermark), and is saved as soon as it moves. At most one page (100 events) is read ahead of the cursor
// on disk, so after a kill -9 at any point nothing is lost and at most those 100 events are produced again. A
// delivery Kafka fails is retried rather than skipped.
//
// # Cursor file format
//
// One line: the createdAt of the last acknowledged event in RFC 3339 UTC with milliseconds, a space, and its id:
//
//	2026-07-04T10:00:00.123Z 4711
//
// The Source resumes with the Ozone cursor "1783159200123::4711", that is with the first event after that one.
// A line holding only an RFC 3339 timestamp (the format of earlier bridges) is read as a starting point: every
// event created in that millisecond or later is produced, so switching over repeats at most the events of that
// millisecond and loses none. A missing or empty file starts at Ozone's oldest event. (atkafka keeps one file per
// Kafka cluster, cursor.ForCluster, where this line is the value of a small JSON object naming the cluster.)
package ozone
