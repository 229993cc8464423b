package sink

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
)

// MaxDeadLetterRaw is how much of an input a last-resort dead letter keeps: its base64 stays well below Kafka's
// default 1 MB record limit, the usual reason a whole input is refused.
const MaxDeadLetterRaw = 256 << 10

// DeadLetter describes an input that could not be turned into events. It is written to the dead-letter topic
// with the raw input, so that nothing is lost and the evidence can be replayed once the cause is fixed.
type DeadLetter struct {
	Source string // relay, tap, ozone or labels
	Reason string // a short, bounded kind such as "decode" or "missing_block", also a metric label
	Err    error
	DID    string // when known
	Seq    int64  // relay seq, when known
	Raw    []byte // the input exactly as received
}

// deadLetterValue is the JSON written to the dead-letter topic.
type deadLetterValue struct {
	Source     string `json:"source"`
	Reason     string `json:"reason"`
	Error      string `json:"error"`
	DID        string `json:"did,omitempty"`
	Seq        int64  `json:"seq,omitempty"`
	ReceivedAt string `json:"receivedAt"`
	Raw        string `json:"raw"` // standard base64 of the input
}

// Record renders d as a record for topic, keyed by its DID (or "<unknown>") so a DID's failures stay together.
func (d *DeadLetter) Record(topic string) Record {
	v := deadLetterValue{Source: d.Source, Reason: d.Reason, DID: d.DID, Seq: d.Seq,
		ReceivedAt: time.Now().UTC().Format(time.RFC3339Nano), Raw: base64.StdEncoding.EncodeToString(d.Raw)}
	if d.Err != nil {
		v.Error = d.Err.Error()
	}
	value, _ := json.Marshal(v) // cannot fail: strings and integers only
	key := d.DID
	if key == "" {
		key = "<unknown>"
	}
	headers := []Header{{Key: "source", Value: []byte(d.Source)}, {Key: "reason", Value: []byte(d.Reason)}}
	if d.Seq != 0 {
		headers = append(headers, Header{Key: "seq", Value: strconv.AppendInt(nil, d.Seq, 10)})
	}
	return Record{Topic: topic, Key: []byte(key), Value: value, Headers: headers}
}
