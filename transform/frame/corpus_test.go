package frame_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/atkafka/atkafka/testenv"
	"github.com/atkafka/atkafka/transform/frame"
)

// loadFrames returns the 150 websocket messages of the relay capture.
func loadFrames(t testing.TB) [][]byte { return testenv.CorpusFrames(t) }

// jetstreamEvent is the part of a Jetstream v1 event the conformance test compares.
type jetstreamEvent struct {
	DID    string `json:"did"`
	Kind   string `json:"kind"`
	Commit *struct {
		Rev        string          `json:"rev"`
		Operation  string          `json:"operation"`
		Collection string          `json:"collection"`
		RKey       string          `json:"rkey"`
		Record     json.RawMessage `json:"record"`
		CID        string          `json:"cid"`
	} `json:"commit"`
	Identity *struct {
		Seq    int64   `json:"seq"`
		Time   string  `json:"time"`
		Handle *string `json:"handle"`
	} `json:"identity"`
	Account *struct {
		Active bool    `json:"active"`
		Seq    int64   `json:"seq"`
		Time   string  `json:"time"`
		Status *string `json:"status"`
	} `json:"account"`
}

func loadExpected(t *testing.T) []jetstreamEvent { return testenv.CorpusExpected[jetstreamEvent](t) }

// TestCorpusConformance decodes the real capture and checks every event against what production Jetstream
// served for the same window.
func TestCorpusConformance(t *testing.T) {
	frames := loadFrames(t)
	type key struct{ did, kind, collection, rkey, rev string }
	want := map[key]jetstreamEvent{}
	for _, ev := range loadExpected(t) {
		k := key{did: ev.DID, kind: ev.Kind}
		if ev.Commit != nil {
			k.collection, k.rkey, k.rev = ev.Commit.Collection, ev.Commit.RKey, ev.Commit.Rev
		}
		if _, dup := want[k]; dup {
			t.Fatalf("duplicate expected event %+v", k)
		}
		want[k] = ev
	}
	if len(want) != 152 {
		t.Fatalf("expected file has %d events, want 152", len(want))
	}

	counts := map[string]int{}
	var f frame.Frame
	var recs frame.Records
	for i, msg := range frames {
		if err := f.Decode(msg); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		switch f.Kind {
		case frame.KindCommit:
			c := &f.Commit
			for op, err := range recs.Ops(c) {
				if err != nil {
					t.Fatalf("frame %d (seq %d): %v", i, c.Seq, err)
				}
				k := key{string(c.Repo), "commit", string(op.Collection), string(op.RKey), string(c.Rev)}
				ev, ok := want[k]
				if !ok {
					t.Errorf("frame %d: unexpected op %+v", i, k)
					continue
				}
				delete(want, k)
				counts[op.Action.String()]++
				if ev.Commit.Operation != op.Action.String() {
					t.Errorf("%+v: action %s, want %s", k, op.Action, ev.Commit.Operation)
				}
				if ev.Commit.CID != string(op.CID) {
					t.Errorf("%+v: cid %s, want %s", k, op.CID, ev.Commit.CID)
				}
				if op.Action == frame.ActionDelete {
					if op.Record != nil || ev.Commit.Record != nil {
						t.Errorf("%+v: delete with a record", k)
					}
					continue
				}
				if !testenv.JSONEqual(op.Record, ev.Commit.Record) {
					t.Errorf("%+v: record\n got %s\nwant %s", k, op.Record, ev.Commit.Record)
				}
			}
		case frame.KindIdentity:
			id := f.Identity
			k := key{did: string(id.DID), kind: "identity"}
			ev, ok := want[k]
			if !ok {
				t.Fatalf("frame %d: unexpected identity %s", i, id.DID)
			}
			delete(want, k)
			counts["identity"]++
			if ev.Identity.Seq != id.Seq || ev.Identity.Time != string(id.Time) ||
				(ev.Identity.Handle == nil) != (id.Handle == nil) {
				t.Errorf("identity %+v, want %+v", id, *ev.Identity)
			}
		case frame.KindAccount:
			a := f.Account
			k := key{did: string(a.DID), kind: "account"}
			ev, ok := want[k]
			if !ok {
				t.Fatalf("frame %d: unexpected account %s", i, a.DID)
			}
			delete(want, k)
			counts["account"]++
			if ev.Account.Seq != a.Seq || ev.Account.Active != a.Active || ev.Account.Time != string(a.Time) ||
				(ev.Account.Status == nil) != (a.Status == nil) {
				t.Errorf("account %+v, want %+v", a, *ev.Account)
			}
		default:
			t.Errorf("frame %d: unexpected kind %s", i, f.Kind)
		}
	}
	for k := range want {
		t.Errorf("expected event not produced: %+v", k)
	}
	wantCounts := map[string]int{"create": 144, "update": 2, "delete": 4, "identity": 1, "account": 1}
	if !reflect.DeepEqual(counts, wantCounts) {
		t.Errorf("counts %v, want %v", counts, wantCounts)
	}
}

// TestCorpusSeqs checks the capture decodes as the contiguous seq range its manifest describes.
func TestCorpusSeqs(t *testing.T) {
	var f frame.Frame
	next := int64(31527015322)
	for i, msg := range loadFrames(t) {
		if err := f.Decode(msg); err != nil {
			t.Fatal(err)
		}
		var seq int64
		switch f.Kind {
		case frame.KindCommit:
			seq = f.Commit.Seq
		case frame.KindIdentity:
			seq = f.Identity.Seq
		case frame.KindAccount:
			seq = f.Account.Seq
		}
		if seq != next {
			t.Fatalf("frame %d: seq %d, want %d", i, seq, next)
		}
		next++
	}
}
