package sink_test

import (
	"errors"
	"testing"

	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/sink"
)

// Every dead letter, with or without the optional DID and seq, matches the published schema.
func TestDeadLetterSchema(t *testing.T) {
	for _, dl := range []sink.DeadLetter{
		{Source: "relay", Reason: "decode", Err: errors.New("bad frame"), DID: "did:plc:abc", Seq: 7, Raw: []byte{0xa1, 0}},
		{Source: "tap", Reason: "invalid", Err: errors.New("no did"), Raw: []byte(`{"id":1}`)},
		{Source: "ozone", Reason: "missing_id", Raw: nil},
	} {
		r := dl.Record("dlq")
		schematest.Check(t, schematest.DeadLetter, r.Value)
	}
}
