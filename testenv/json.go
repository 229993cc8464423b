package testenv

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// JSONEqual reports whether a and b hold the same JSON value, whatever their spacing and key order. Numbers are
// compared by their text, so large integers are compared exactly; invalid JSON is equal to nothing.
func JSONEqual(a, b []byte) bool {
	va, okA := decodeJSON(a)
	vb, okB := decodeJSON(b)
	return okA && okB && reflect.DeepEqual(va, vb)
}

func decodeJSON(b []byte) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || d.More() {
		return nil, false
	}
	return v, true
}
