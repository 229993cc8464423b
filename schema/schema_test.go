package schema_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/atkafka/atkafka/schema"
	"github.com/atkafka/atkafka/schema/schematest"
	"github.com/atkafka/atkafka/transform/format"
)

func TestSchemasAreDraft2020(t *testing.T) {
	for _, name := range schema.Names() {
		b, _ := schema.Get(name)
		var s struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
		}
		if err := json.Unmarshal(b, &s); err != nil || s.Schema != "https://json-schema.org/draft/2020-12/schema" || s.ID != schema.BaseID+name+".json" {
			t.Errorf("%s: $schema %q, $id %q, %v", name, s.Schema, s.ID, err)
		}
	}
	if _, ok := schema.Get("nope"); ok {
		t.Error("Get found a schema that does not exist")
	}
}

func ptr[T any](v T) *T { return &v }

// Every event kind the formatter renders, in every format, with every eventMetadata field, matches its schema.
func TestRenderedEventsMatch(t *testing.T) {
	const did = "did:plc:abc"
	meta := []byte(`{"didDocument":{"id":"did:plc:abc"},"pdsHost":"https://pds.test","handle":"a.test","didCreatedAt":"2024-01-01T00:00:00.000Z","accountAge":3600,"profile":{"did":"did:plc:abc"}}`)
	ts := "2026-07-04T14:38:08.999Z"
	post := &format.Operation{Action: "create", Collection: "app.bsky.feed.post", Rkey: "3k", CID: "bafyrei", Record: []byte(`{"text":"hi"}`)}
	del := &format.Operation{Action: "delete", Collection: "app.bsky.feed.post", Rkey: "3k"}
	relay := []format.Event{
		{DID: did, Timestamp: ts, Metadata: meta, Operation: post},
		{DID: did, Timestamp: ts, Operation: del},
		{DID: did, Timestamp: ts, Metadata: meta, Account: &format.Account{Active: false, Seq: 5, Status: "takendown"}},
		{DID: did, Timestamp: ts, Identity: &format.Identity{Seq: 6, Handle: "a.test"}},
		{DID: did, Timestamp: ts, Sync: &format.Sync{Seq: 7, Rev: "3r", Commit: "bafyc"}},
		{Info: &format.Info{Name: "OutdatedCursor", Message: ptr("old")}},
	}
	tap := []format.Event{
		{DID: did, Timestamp: ts, Metadata: meta, Live: ptr(true), Operation: post},
		{DID: did, Timestamp: ts, Live: ptr(false), Operation: del},
		{DID: did, Timestamp: ts, Identity: &format.Identity{Handle: "a.test", IsActive: ptr(false), Status: "deactivated"}},
		{DID: did, Timestamp: ts, Account: &format.Account{Active: false, Status: "deactivated"}},
	}
	labels := []format.Event{
		{DID: did, Timestamp: ts, Metadata: meta, Label: &format.Label{Labeler: "did:plc:l", Seq: 9, Ver: 1, Src: "did:plc:l",
			URI: "at://did:plc:abc/app.bsky.feed.post/3k", CID: "bafyrei", Val: "!hide", Cts: ts, Exp: ts, Sig: []byte{1, 2, 3}}},
		{DID: did, Timestamp: ts, Label: &format.Label{Labeler: "labeler.test:443", Seq: 10, Src: "did:plc:l", URI: did, Val: "spam",
			Neg: true, Cts: ts}},
	}
	// schema.Event reads every field: encoded again, a decoded event is what was rendered.
	for _, ev := range append(relay, tap...) {
		value := format.NewFormatter().AppendValue(nil, &ev)
		e, err := schema.DecodeEvent(value)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(e)
		var want, got any
		_ = json.Unmarshal(value, &want)
		_ = json.Unmarshal(again, &got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("schema.Event lost something:\n got %s\nwant %s", again, value)
		}
		if m, err := e.Metadata(); err != nil || (m == nil) != (ev.Metadata == nil) {
			t.Errorf("%s: metadata %+v, %v", value, m, err)
		}
	}

	ids, _ := format.NewSnowflake(1)
	for _, f := range []*format.Formatter{format.NewFormatter(), format.NewFormatter(format.Osprey(ids)),
		format.NewFormatter(format.Osprey(ids), format.Coordinator())} {
		for _, ev := range relay {
			schematest.Check(t, schematest.RelayEvent, f.AppendValue(nil, &ev))
		}
		for _, ev := range tap {
			schematest.Check(t, schematest.TapEvent, f.AppendValue(nil, &ev))
		}
		for _, ev := range labels {
			if _, _, env := schematest.Check(t, schematest.LabelEvent, f.AppendValue(nil, &ev)); f.OspreyCompatible() && env.Name != format.LabelAction {
				t.Errorf("label action name %q", env.Name)
			}
		}
	}
}

// The schemas are strict where the contract is: what atkafka never writes is rejected.
func TestSchemasRejectWhatIsNotWritten(t *testing.T) {
	op := `"did":"did:plc:abc","timestamp":"2026-07-04T14:38:08.999Z","operation":{"action":"%s","collection":"a.b.c","rkey":"r","uri":"at://did:plc:abc/a.b.c/r","path":"a.b.c/r"%s}`
	for _, c := range []struct{ schema, value string }{
		{"relay-event", "{" + fmt.Sprintf(op, "delete", `,"record":{}`) + "}"},
		{"relay-event", "{" + fmt.Sprintf(op, "create", "") + "}"},
		{"relay-event", "{" + fmt.Sprintf(op, "delete", "") + `,"extra":1}`},
		{"relay-event", "{" + fmt.Sprintf(op, "delete", "") + `,"eventMetadata":{"handle":"a.test"}}`},
		{"relay-event", "{" + fmt.Sprintf(op, "delete", "") + `,"eventMetadata":{"accountAge":1,"age":2}}`},
		{"relay-event", `{"did":"did:plc:abc","timestamp":"t","account":{"active":true,"seq":1}}`},
		{"relay-event", `{"did":"did:plc:abc","timestamp":"2026-07-04T14:38:08Z","account":{"active":true}}`},
		{"tap-event", "{" + fmt.Sprintf(op, "delete", "") + "}"},
		{"dead-letter", `{"source":"relay","reason":"decode","error":"x","receivedAt":"2026-07-04T14:38:08Z","raw":"not base64!"}`},
		{"dead-letter", `{"source":"firehose","reason":"decode","error":"x","receivedAt":"2026-07-04T14:38:08Z","raw":""}`},
		{"label-event", `{"did":"did:plc:abc","timestamp":"2026-07-04T14:38:08Z","label":{"labeler":"did:plc:l","seq":1,"src":"did:plc:l","uri":"bob.test","val":"x","neg":false,"cts":"2026-07-04T14:38:08Z"}}`},
		{"label-event", `{"did":"did:plc:abc","timestamp":"2026-07-04T14:38:08Z","label":{"labeler":"did:plc:l","seq":1,"src":"did:plc:l","uri":"did:plc:abc","val":"x","cts":"2026-07-04T14:38:08Z"}}`},
		{"ozone-event", `{"id":1,"event":{},"subject":{"$type":"x"},"subjectBlobCids":[],"createdBy":"did:plc:m","createdAt":"2026-07-04T14:38:08Z"}`},
		{"osprey-coordinator", `{"id":12,"name":"account","data":{"info":{"name":"x"}},"secret_data":{}}`},
		{"osprey-coordinator", `{"id":"12","name":"post","data":{"info":{"name":"x"}},"secret_data":{}}`},
		{"osprey-worker", `{"data":{"action_name":"info","action_id":"1","data":{"info":{"name":"x"}},"timestamp":"t","secret_data":{},"encoding":"UTF8"},"send_time":"2026-07-04T14:38:08.999Z"}`},
	} {
		if err := schematest.Validate(c.schema, []byte(c.value)); err == nil {
			t.Errorf("%s accepts %s", c.schema, c.value)
		}
	}
}
