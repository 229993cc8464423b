package format

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func ptr[T any](v T) *T { return &v }

func mustJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return m
}

func TestEventShapes(t *testing.T) {
	const did = "did:plc:abc"
	cases := []struct {
		name string
		ev   Event
		want string
	}{
		{"create", Event{DID: did, Timestamp: "2024-01-01T12:00:00.000Z", Operation: &Operation{Action: "create",
			Collection: "app.bsky.feed.post", Rkey: "3k", CID: "bafyrei", Record: []byte(`{"$type":"app.bsky.feed.post","text":"Hello"}`)}},
			`{"did":"did:plc:abc","timestamp":"2024-01-01T12:00:00.000Z","operation":{"action":"create","collection":"app.bsky.feed.post","rkey":"3k","uri":"at://did:plc:abc/app.bsky.feed.post/3k","cid":"bafyrei","path":"app.bsky.feed.post/3k","record":{"$type":"app.bsky.feed.post","text":"Hello"}}}`},
		{"delete has no cid or record", Event{DID: did, Timestamp: "t", Operation: &Operation{Action: "delete", Collection: "app.bsky.feed.like", Rkey: "x"}},
			`{"did":"did:plc:abc","timestamp":"t","operation":{"action":"delete","collection":"app.bsky.feed.like","rkey":"x","uri":"at://did:plc:abc/app.bsky.feed.like/x","path":"app.bsky.feed.like/x"}}`},
		{"account", Event{DID: did, Timestamp: "t", Account: &Account{Active: false, Seq: 7, Status: "takendown"}},
			`{"did":"did:plc:abc","timestamp":"t","account":{"active":false,"seq":7,"status":"takendown"}}`},
		{"account without status", Event{DID: did, Timestamp: "t", Account: &Account{Active: true, Seq: 7}},
			`{"did":"did:plc:abc","timestamp":"t","account":{"active":true,"seq":7}}`},
		{"identity", Event{DID: did, Timestamp: "t", Identity: &Identity{Seq: 8, Handle: "alice.test"}},
			`{"did":"did:plc:abc","timestamp":"t","identity":{"handle":"alice.test","seq":8}}`},
		{"tap identity", Event{DID: did, Timestamp: "t", Identity: &Identity{Handle: "alice.test", IsActive: ptr(true), Status: "active"}},
			`{"did":"did:plc:abc","timestamp":"t","identity":{"handle":"alice.test","isActive":true,"status":"active"}}`},
		{"info", Event{Info: &Info{Name: "OutdatedCursor", Message: ptr("too old")}},
			`{"info":{"name":"OutdatedCursor","message":"too old"}}`},
		{"sync", Event{DID: did, Timestamp: "t", Sync: &Sync{Seq: 9, Rev: "3r", Commit: "bafyc"}},
			`{"did":"did:plc:abc","timestamp":"t","sync":{"seq":9,"rev":"3r","commit":"bafyc"}}`},
		{"metadata and live", Event{DID: did, Timestamp: "t", Metadata: []byte(`{"accountAge":-1}`), Live: ptr(false),
			Operation: &Operation{Action: "delete", Collection: "c.d.e", Rkey: "r"}},
			`{"did":"did:plc:abc","timestamp":"t","eventMetadata":{"accountAge":-1},"live":false,"operation":{"action":"delete","collection":"c.d.e","rkey":"r","uri":"at://did:plc:abc/c.d.e/r","path":"c.d.e/r"}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.ev.AppendJSON(nil)
			if string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			mustJSON(t, got)
		})
	}
}

func TestOspreyEnvelope(t *testing.T) {
	ids, _ := NewSnowflake(3)
	now := time.Date(2026, 7, 4, 14, 39, 14, 123456789, time.FixedZone("x", 3600))
	f := NewFormatter(Osprey(ids), WithClock(func() time.Time { return now }))
	ev := Event{DID: "did:plc:abc", Timestamp: "2026-07-04T14:38:08.999Z", Operation: &Operation{Action: "update", Collection: "a.b.c", Rkey: "r", CID: "c", Record: []byte(`{}`)}}
	m := mustJSON(t, f.AppendValue(nil, &ev))
	if m["send_time"] != "2026-07-04T13:39:14.123Z" {
		t.Errorf("send_time = %v", m["send_time"])
	}
	data := m["data"].(map[string]any)
	if data["action_name"] != "operation#update" || data["encoding"] != "UTF8" || data["timestamp"] != ev.Timestamp {
		t.Errorf("envelope = %v", data)
	}
	if !reflect.DeepEqual(data["secret_data"], map[string]any{}) {
		t.Errorf("secret_data = %v", data["secret_data"])
	}
	if inner := data["data"].(map[string]any); inner["did"] != "did:plc:abc" {
		t.Errorf("inner event = %v", inner)
	}
	if _, ok := data["action_id"].(float64); !ok {
		t.Errorf("action_id is not a number: %T", data["action_id"])
	}
}

func TestOspreyCoordinator(t *testing.T) {
	ids, _ := NewSnowflake(3)
	f := NewFormatter(Osprey(ids), Coordinator())
	ev := Event{DID: "did:plc:abc", Timestamp: "2026-07-04T14:38:08.999Z", Operation: &Operation{Action: "create", Collection: "a.b.c", Rkey: "r", CID: "c", Record: []byte(`{}`)}}
	var s string
	if err := msgpack.Unmarshal(f.AppendValue(nil, &ev), &s); err != nil {
		t.Fatal(err)
	}
	var v struct {
		ID         string          `json:"id"`
		Name       string          `json:"name"`
		Data       json.RawMessage `json:"data"`
		SecretData map[string]any  `json:"secret_data"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	if id, err := strconv.ParseUint(v.ID, 10, 64); err != nil || SnowflakeTime(int64(id)).Before(time.Now().Add(-time.Minute)) {
		t.Errorf("id %q is not a fresh snowflake (%v)", v.ID, err)
	}
	if v.Name != "operation#create" || string(v.Data) != string(ev.AppendJSON(nil)) || v.SecretData == nil {
		t.Errorf("coordinator value = %s", s)
	}
	raw := NewFormatter(Osprey(ids), Coordinator()).AppendRaw(nil, "ozone:modEventTakedown", "t", []byte(`{"id":1}`))
	if err := msgpack.Unmarshal(raw, &s); err != nil || !strings.Contains(s, `"data":{"id":1}`) {
		t.Errorf("raw event: %v %s", err, s)
	}
}

// TestMsgpackStringHeaders checks every header size at its bounds against an independent decoder, with bytes
// before the string as a record value's buffer may have.
func TestMsgpackStringHeaders(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000} {
		body := strings.Repeat("x", n)
		out := appendMsgpackString([]byte("pre"), func(dst []byte) []byte { return append(dst, body...) })
		if string(out[:3]) != "pre" {
			t.Fatalf("%d: prefix overwritten", n)
		}
		var s string
		dec := msgpack.NewDecoder(bytes.NewReader(out[3:]))
		if err := dec.Decode(&s); err != nil || s != body {
			t.Fatalf("%d: decoded %d bytes, %v", n, len(s), err)
		}
		if _, err := dec.DecodeInterface(); err == nil {
			t.Fatalf("%d: bytes after the string", n)
		}
	}
}

func TestAppendStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " back \ slash`, "ctl \x00\x01\x1f\n\r\t", "emoji 🦋 é", "bad \xff utf8 \xc3", "<html>&"} {
		var back string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); back != want {
			t.Errorf("%q round-trips to %q, want %q", s, back, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("hello \"world\"\n\xff")
	f.Fuzz(func(t *testing.T, s string) {
		var back string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil {
			t.Fatalf("%q: invalid JSON: %v", s, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); back != want {
			t.Fatalf("%q round-trips to %q, want %q", s, back, want)
		}
	})
}

func TestSnowflakeUniqueAndOrdered(t *testing.T) {
	s, err := NewSnowflake(MaxSnowflakeWorker)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1_000_000
	seen := make(map[int64]struct{}, n)
	last := int64(0)
	start := time.Now()
	for range n {
		id := s.Next()
		if id <= last {
			t.Fatalf("id %d not above previous %d", id, last)
		}
		last = id
		seen[id] = struct{}{}
	}
	if len(seen) != n {
		t.Fatalf("%d duplicate ids", n-len(seen))
	}
	if got := SnowflakeTime(last); got.Before(start.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Fatalf("id time %v, want about now", got)
	}
	if w := (last >> 12) & MaxSnowflakeWorker; w != MaxSnowflakeWorker {
		t.Fatalf("worker bits = %d", w)
	}
	if _, err := NewSnowflake(MaxSnowflakeWorker + 1); err == nil {
		t.Fatal("worker id out of range accepted")
	}
}

func BenchmarkAppendValue(b *testing.B) {
	ids, _ := NewSnowflake(1)
	ev := Event{DID: "did:plc:wq4aajammjtxdomz3e23667t", Timestamp: "2026-07-04T14:38:08.999Z", Metadata: []byte(`{"pdsHost":"https://x","accountAge":5}`),
		Operation: &Operation{Action: "create", Collection: "app.bsky.feed.like", Rkey: "3mptbyplj5d2a", CID: "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i",
			Record: []byte(`{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z","subject":{"cid":"bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza","uri":"at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"}}`)}}
	for _, mode := range []struct {
		name string
		f    *Formatter
	}{{"standard", NewFormatter()}, {"osprey", NewFormatter(Osprey(ids))}, {"coordinator", NewFormatter(Osprey(ids), Coordinator())}} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				buf = mode.f.AppendValue(buf[:0], &ev)
			}
		})
	}
}

func TestAppendOspreyTime(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{time.Unix(0, 0).UTC(), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<35), r.Int64N(1e9)).UTC())
	}
	for _, tm := range times {
		if got, want := string(appendOspreyTime(nil, tm)), tm.Format(ospreyTime); got != want {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
}
