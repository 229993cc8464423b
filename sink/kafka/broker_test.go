package kafka

import (
	"testing"
	"time"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/testenv"
)

func TestRoundTripKeysHeaders(t *testing.T) {
	k := testenv.Kafka(t)
	topic, dead := testenv.NewTopic(t), testenv.NewTopic(t)+"-dead"
	p := newProducer(t, Config{Brokers: []string{k.Brokers}, Topic: topic, ExtraTopics: []string{dead}, Partitions: 3})

	a := newAcks()
	msg := a.message(1, "", "first", "second")
	msg.Records[0].Headers = []sink.Header{{Key: "kind", Value: []byte("commit")}, {Key: "empty"}}
	msg.Records = append(msg.Records, sink.Record{Topic: dead, Key: []byte("bad"), Value: []byte("undecodable")})
	send(t, p, msg)
	send(t, p, a.message(2, ""))
	if errs := a.wait(t, 30*time.Second); len(errs) > 0 {
		t.Fatalf("Done errors: %v", errs)
	}

	recs := testenv.ReadAll(t, k.Brokers, topic, 2, 30*time.Second)
	if len(recs) != 2 {
		t.Fatalf("read %d records from %s, want 2", len(recs), topic)
	}
	byValue := map[string]int{}
	for i, r := range recs {
		byValue[string(r.Value)] = i
		if string(r.Key) != "key-1" {
			t.Errorf("record %q has key %q, want key-1", r.Value, r.Key)
		}
	}
	first := recs[byValue["first"]]
	if len(first.Headers) != 2 || first.Headers[0].Key != "kind" || string(first.Headers[0].Value) != "commit" || first.Headers[1].Key != "empty" {
		t.Errorf("headers of first record = %v", first.Headers)
	}
	if dl := testenv.ReadAll(t, k.Brokers, dead, 1, 30*time.Second); len(dl) != 1 || string(dl[0].Value) != "undecodable" {
		t.Errorf("dead-letter topic holds %v, want the one undecodable record", dl)
	}
}
