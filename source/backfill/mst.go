package backfill

import (
	"fmt"
	"time"

	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/format"
	"github.com/atkafka/atkafka/transform/verify"
)

// maxMSTDepth bounds the walk's recursion: an MST of 2^32 records is about 8 levels deep (fanout ~16), so a
// deeper one is malformed (or a cycle) and must not exhaust the stack.
const maxMSTDepth = 64

// walkMST calls leaf for every entry of the MST rooted at root, in key order, with the entry's full key
// ("collection/rkey") and its record's CID. It reads nodes from car in place; key is only valid during the call.
func walkMST(car *dagcbor.CAR, root dagcbor.Link, leaf func(key []byte, value dagcbor.Link) error) error {
	return walkNode(car, root, 0, leaf)
}

func walkNode(car *dagcbor.CAR, id dagcbor.Link, depth int, leaf func([]byte, dagcbor.Link) error) error {
	if depth > maxMSTDepth {
		return fmt.Errorf("MST deeper than %d levels", maxMSTDepth)
	}
	data, ok := car.BlockByLink(id)
	if !ok {
		return fmt.Errorf("MST node %s missing from the CAR", id)
	}
	d := dagcbor.NewDecoder(data)
	n, err := d.MapHeader()
	if err != nil {
		return fmt.Errorf("MST node %s: %w", id, err)
	}
	// Canonical DAG-CBOR orders "e" before "l", but the left subtree comes first in key order: remember the
	// entries and walk them after it.
	var entries []byte
	var left dagcbor.Link
	for range n {
		k, err := d.Text()
		if err != nil {
			return fmt.Errorf("MST node %s: %w", id, err)
		}
		switch string(k) {
		case "e":
			start := d.Offset()
			if err := d.Skip(); err != nil {
				return fmt.Errorf("MST node %s: %w", id, err)
			}
			entries = data[start:d.Offset()]
		case "l":
			if !d.Null() {
				if left, err = d.Link(); err != nil {
					return fmt.Errorf("MST node %s: %w", id, err)
				}
			}
		default:
			if err := d.Skip(); err != nil {
				return fmt.Errorf("MST node %s: %w", id, err)
			}
		}
	}
	if left != nil {
		if err := walkNode(car, left, depth+1, leaf); err != nil {
			return err
		}
	}
	if entries == nil {
		return nil
	}
	d.Reset(entries)
	count, err := d.ArrayHeader()
	// Keys are compressed against the previous entry of the same node.
	var key []byte
	if err != nil {
		return fmt.Errorf("MST node %s entries: %w", id, err)
	}
	for range count {
		var (
			prefix int64
			suffix []byte
			value  dagcbor.Link
			tree   dagcbor.Link
		)
		fields, err := d.MapHeader()
		if err != nil {
			return fmt.Errorf("MST node %s entry: %w", id, err)
		}
		for range fields {
			k, err := d.Text()
			if err != nil {
				return fmt.Errorf("MST node %s entry: %w", id, err)
			}
			switch string(k) {
			case "p":
				prefix, err = d.Int()
			case "k":
				suffix, err = d.Bytes()
			case "v":
				value, err = d.Link()
			case "t":
				if !d.Null() {
					tree, err = d.Link()
				}
			default:
				err = d.Skip()
			}
			if err != nil {
				return fmt.Errorf("MST node %s entry: %w", id, err)
			}
		}
		if prefix < 0 || int(prefix) > len(key) || value == nil {
			return fmt.Errorf("MST node %s: entry with prefix %d of a %d-byte key or no value", id, prefix, len(key))
		}
		key = append(key[:prefix], suffix...)
		if err := leaf(key, value); err != nil {
			return err
		}
		if tree != nil {
			if err := walkNode(car, tree, depth+1, leaf); err != nil {
				return err
			}
		}
	}
	return nil
}

// Floor renders every record of the repositories (CARs and their DIDs) on one goroutine: CAR index, commit, MST
// walk, DAG-CBOR to JSON and the operation event around it. It is what a run does per record without HTTP, Kafka
// or metadata: the floor the benchmark measures instances against. It returns the records rendered.
func Floor(cars [][]byte, dids []string) (int, error) {
	var car dagcbor.CAR
	var rec, out []byte
	n := 0
	for i, b := range cars {
		if err := car.Parse(b); err != nil {
			return n, err
		}
		commit, err := verify.RepoCommit(&car, dids[i])
		if err != nil {
			return n, err
		}
		live := false
		err = walkMST(&car, dagcbor.Link(commit.Data.Bytes()), func(key []byte, value dagcbor.Link) error {
			collection, rkey, _ := splitKey(key)
			block, ok := car.BlockByLink(value)
			if !ok {
				return fmt.Errorf("record %s missing", key)
			}
			if rec, err = dagcbor.AppendJSON(rec[:0], block); err != nil {
				return err
			}
			ev := format.Event{DID: dids[i], Live: &live, Operation: &format.Operation{Action: "create", Collection: collection,
				Rkey: rkey, CID: value.String(), Record: rec}}
			ev.Timestamp = format.RecordTime(rec, rkey, time.Time{}).UTC().Format(format.TimeFormat)
			out = ev.AppendJSON(out[:0])
			n++
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
