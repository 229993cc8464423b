package kafka

import "github.com/atkafka/atkafka/sink"

var _ sink.Committer = (*TxnProducer)(nil)

// CommitsCursor marks TxnProducer as a sink.Committer: each transaction commits the Cursor of its last message
// with the records, so sources reach it only through a checkpoint.Checkpoint, which orders their messages.
func (p *TxnProducer) CommitsCursor() {}
