// Package schematest checks record values the way atkafka's consumers read them, for tests in every package that
// produces records. It decodes Osprey's coordinator format with an independent MessagePack implementation, so
// that a test cannot pass on atkafka's encoder agreeing with itself.
package schematest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Format names the encoding of a record value.
type Format string

// The encodings atkafka writes.
const (
	Standard    Format = "standard"
	Worker      Format = "worker"
	Coordinator Format = "coordinator"
)

// Envelope is what an Osprey envelope says around its event, in either format.
type Envelope struct {
	ID   uint64
	Name string
}

// Unwrap returns the event inside a record value, its format and, for Osprey, the envelope's id and action name.
// It fails t when the value is none of the formats, or an envelope lacks what Osprey requires: the coordinator
// reads one MessagePack string holding JSON whose id is a u64 in a decimal string; the worker reads an integer
// action_id, an action_name and data as an object.
func Unwrap(t testing.TB, value []byte) (json.RawMessage, Format, Envelope) {
	t.Helper()
	if len(value) > 0 && value[0] != '{' {
		var s string
		dec := msgpack.NewDecoder(bytes.NewReader(value))
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("record value is neither JSON nor a MessagePack string: %v\n%q", err, value)
		}
		if _, err := dec.DecodeInterface(); err == nil {
			t.Fatalf("bytes after the MessagePack string: %q", value)
		}
		var v struct {
			ID         string          `json:"id"`
			Name       string          `json:"name"`
			Data       json.RawMessage `json:"data"`
			SecretData json.RawMessage `json:"secret_data"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("coordinator string is not JSON: %v\n%s", err, s)
		}
		id, err := strconv.ParseUint(v.ID, 10, 64)
		if err != nil || v.Name == "" || !bytes.HasPrefix(v.Data, []byte("{")) {
			t.Fatalf("not a coordinator action (id: %v): %s", err, s)
		}
		return v.Data, Coordinator, Envelope{ID: id, Name: v.Name}
	}
	var env struct {
		Data *struct {
			ActionID   *uint64         `json:"action_id"`
			ActionName string          `json:"action_name"`
			Data       json.RawMessage `json:"data"`
		} `json:"data"`
		SendTime *string `json:"send_time"`
	}
	if err := json.Unmarshal(value, &env); err != nil {
		t.Fatalf("record value is not JSON: %v\n%s", err, value)
	}
	if env.SendTime == nil {
		return value, Standard, Envelope{}
	}
	d := env.Data
	if d == nil || d.ActionID == nil || d.ActionName == "" || !bytes.HasPrefix(d.Data, []byte("{")) {
		t.Fatalf("not an Osprey worker envelope: %s", value)
	}
	return d.Data, Worker, Envelope{ID: *d.ActionID, Name: d.ActionName}
}
