// Package backfill loads whole repositories into Kafka: Plan lists every account of a relay into a compacted
// work topic, one record per DID; any number of Run instances share that topic's partitions through a Kafka
// consumer group, fetch each repository from its PDS (com.atproto.sync.getRepo), walk its MST and produce every
// record in the standard operation shape; Status reads progress back from the topics' offsets.
//
// Kafka is the only coordinator. With exactly-once (the default) a batch of repositories' records and the
// commit of their work offsets go in one transaction of a group transact session (KIP-447): a crash, a kill -9
// or a rebalance aborts the open transaction and the partition's next owner redoes exactly the uncommitted
// work, so read_committed consumers see every repository once.
package backfill
