// Package schematest checks record values the way atkafka's consumers read them, for tests in every package that
// produces records: against the published JSON Schemas (package schema), with a maintained validator, and with
// Osprey's coordinator format decoded by an independent MessagePack implementation, so that a test cannot pass on
// atkafka's encoders agreeing with themselves.
package schematest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/atkafka/atkafka/schema"
)

// Shape names the schema of a record in the standard format, which Osprey envelopes carry as their data.
type Shape string

// The record shapes.
const (
	RelayEvent Shape = "relay-event"
	TapEvent   Shape = "tap-event"
	OzoneEvent Shape = "ozone-event"
	LabelEvent Shape = "label-event"
	DeadLetter Shape = "dead-letter"
)

// compiled holds every schema, compiled once per test binary.
var compiled = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	for _, name := range schema.Names() {
		b, _ := schema.Get(name)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		if err := c.AddResource(schema.BaseID+name+".json", doc); err != nil {
			return nil, err
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, name := range schema.Names() {
		sch, err := c.Compile(schema.BaseID + name + ".json")
		if err != nil {
			return nil, err
		}
		out[name] = sch
	}
	return out, nil
})

// Validate reports whether value (JSON) is valid against the schema named name.
func Validate(name string, value []byte) error {
	schemas, err := compiled()
	if err != nil {
		return fmt.Errorf("compiling the schemas: %w", err)
	}
	sch, ok := schemas[name]
	if !ok {
		return fmt.Errorf("no schema %q", name)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return sch.Validate(inst)
}

// validate fails t unless value is valid against the schema named name.
func validate(t testing.TB, name string, value []byte) {
	t.Helper()
	if err := Validate(name, value); err != nil {
		t.Fatalf("record does not match schema %s: %v\n%s", name, err, value)
	}
}

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

// Check validates a record value against its schemas (shape's, and the Osprey envelope's around it) and returns
// the event inside, its format and, for Osprey, the envelope's id and action name. Beyond the schemas, it fails t
// when an envelope lacks what Osprey requires: the coordinator reads one MessagePack string holding JSON whose id
// is a u64 in a decimal string; the worker reads an integer action_id, an action_name and data as an object.
func Check(t testing.TB, shape Shape, value []byte) (json.RawMessage, Format, Envelope) {
	t.Helper()
	data, f, env := unwrap(t, value)
	validate(t, string(shape), data)
	return data, f, env
}

// unwrap decodes a record value as the consumer of its format does and validates the envelope, if any.
func unwrap(t testing.TB, value []byte) (json.RawMessage, Format, Envelope) {
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
			ID   string          `json:"id"`
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("coordinator string is not JSON: %v\n%s", err, s)
		}
		validate(t, "osprey-coordinator", []byte(s))
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
	validate(t, "osprey-worker", value)
	d := env.Data
	if d == nil || d.ActionID == nil || d.ActionName == "" || !bytes.HasPrefix(d.Data, []byte("{")) {
		t.Fatalf("not an Osprey worker envelope: %s", value)
	}
	return d.Data, Worker, Envelope{ID: *d.ActionID, Name: d.ActionName}
}
