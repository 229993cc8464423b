package backfill

import (
	"fmt"

	"github.com/atkafka/atkafka/transform/dagcbor"
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
