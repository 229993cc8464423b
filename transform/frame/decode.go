package frame

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/atkafka/atkafka/transform/dagcbor"
)

// Decode replaces f's contents with the message msg: a DAG-CBOR header {op, t} followed by exactly one
// DAG-CBOR body. A message type it does not know yields Kind KindUnknown and a nil error, with its body left
// undecoded. Unknown body fields are skipped, as the lexicon allows fields to be added. Any error means the
// message is malformed.
func (f *Frame) Decode(msg []byte) error {
	f.Kind, f.Type = KindUnknown, nil
	d := dagcbor.NewDecoder(msg)
	op, typ, err := header(&d)
	if err != nil {
		return fmt.Errorf("frame: header: %w", err)
	}
	var kind Kind
	switch op {
	case 1:
		switch string(typ) {
		case "#commit":
			kind, err = KindCommit, f.Commit.decode(&d)
		case "#sync":
			kind, err = KindSync, f.Sync.decode(&d)
		case "#identity":
			kind, err = KindIdentity, f.Identity.decode(&d)
		case "#account":
			kind, err = KindAccount, f.Account.decode(&d)
		case "#info":
			kind, err = KindInfo, f.Info.decode(&d)
		case "#labels":
			kind, err = KindLabels, f.Labels.decode(&d)
		default:
			f.Type = typ
			return nil
		}
	case -1:
		kind, err = KindError, f.Error.decode(&d)
	default:
		return fmt.Errorf("frame: header: unknown op %d", op)
	}
	if err == nil && len(d.Remaining()) != 0 {
		err = fmt.Errorf("%d trailing bytes", len(d.Remaining()))
	}
	if err != nil {
		return fmt.Errorf("frame: %s body: %w", kind, err)
	}
	f.Kind, f.Type = kind, typ
	return nil
}

func header(d *dagcbor.Decoder) (op int64, typ []byte, err error) {
	n, err := d.MapHeader()
	if err != nil {
		return 0, nil, err
	}
	hasOp := false
	for range n {
		k, err := text(d)
		if err != nil {
			return 0, nil, err
		}
		switch string(k) {
		case "op":
			op, err = d.Int()
			hasOp = true
		case "t":
			typ, err = text(d)
		default:
			err = d.Skip()
		}
		if err != nil {
			return 0, nil, err
		}
	}
	if !hasOp {
		return 0, nil, errors.New(`missing "op"`)
	}
	if op == 1 && typ == nil {
		return 0, nil, errors.New(`missing "t"`)
	}
	return op, typ, nil
}

// fields tracks which required fields of a body were seen.
type fields uint16

// need reports an error naming the first required field (by bit, in names) that is missing.
func (seen fields) need(required fields, names ...string) error {
	for i, name := range names {
		if required&(1<<i) != 0 && seen&(1<<i) == 0 {
			return fmt.Errorf("missing %q", name)
		}
	}
	return nil
}

// text reads a text string, requiring valid UTF-8 so that consumers can put it in JSON as is.
func text(d *dagcbor.Decoder) ([]byte, error) {
	s, err := d.Text()
	if err == nil && !utf8.Valid(s) {
		err = errors.New("invalid UTF-8 in text string")
	}
	return s, err
}

// optText reads a text string that may be null (nil result).
func optText(d *dagcbor.Decoder) ([]byte, error) {
	if d.Null() {
		return nil, nil
	}
	return text(d)
}

// optLink reads a link that may be null (nil result).
func optLink(d *dagcbor.Decoder) (dagcbor.Link, error) {
	if d.Null() {
		return nil, nil
	}
	return d.Link()
}

// Field bits of Commit, in the order of commitFields.
const (
	cRepo fields = 1 << iota
	cRev
	cCommit
	cOps
	cTime
	cSeq
)

var commitFields = []string{"repo", "rev", "commit", "ops", "time", "seq"}

func (c *Commit) decode(d *dagcbor.Decoder) error {
	ops := c.Ops[:0]
	*c = Commit{}
	n, err := d.MapHeader()
	if err != nil {
		return err
	}
	var seen fields
	for range n {
		k, err := text(d)
		if err != nil {
			return err
		}
		switch string(k) {
		case "repo":
			c.Repo, err = text(d)
			seen |= cRepo
		case "rev":
			c.Rev, err = text(d)
			seen |= cRev
		case "since":
			c.Since, err = optText(d)
		case "commit":
			c.Commit, err = d.Link()
			seen |= cCommit
		case "blocks":
			c.Blocks, err = d.Bytes()
		case "ops":
			ops, err = decodeOps(d, ops[:0])
			seen |= cOps
		case "prevData":
			c.PrevData, err = optLink(d)
		case "time":
			c.Time, err = text(d)
			seen |= cTime
		case "seq":
			c.Seq, err = d.Int()
			seen |= cSeq
		case "tooBig":
			c.TooBig, err = d.Bool()
		case "rebase":
			_, err = d.Bool()
		case "blobs":
			err = skipLinks(d)
		default:
			err = d.Skip()
		}
		if err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
	}
	c.Ops = ops
	return seen.need(cRepo|cRev|cCommit|cOps|cTime|cSeq, commitFields...)
}

func skipLinks(d *dagcbor.Decoder) error {
	n, err := d.ArrayHeader()
	if err != nil {
		return err
	}
	for range n {
		if _, err := d.Link(); err != nil {
			return err
		}
	}
	return nil
}

func decodeOps(d *dagcbor.Decoder, ops []Op) ([]Op, error) {
	n, err := d.ArrayHeader()
	if err != nil {
		return ops, err
	}
	for i := range n {
		var op Op
		if err := op.decode(d); err != nil {
			return ops, fmt.Errorf("op %d: %w", i, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

func (op *Op) decode(d *dagcbor.Decoder) error {
	n, err := d.MapHeader()
	if err != nil {
		return err
	}
	var action, path bool
	for range n {
		k, err := text(d)
		if err != nil {
			return err
		}
		switch string(k) {
		case "action":
			var a []byte
			if a, err = text(d); err != nil {
				break
			}
			action = true
			switch string(a) {
			case "create":
				op.Action = ActionCreate
			case "update":
				op.Action = ActionUpdate
			case "delete":
				op.Action = ActionDelete
			default:
				err = fmt.Errorf("unknown action %q", a)
			}
		case "path":
			op.Path, err = text(d)
			path = true
		case "cid":
			op.CID, err = optLink(d)
		case "prev":
			op.Prev, err = optLink(d)
		default:
			err = d.Skip()
		}
		if err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
	}
	if !action || !path {
		return errors.New(`missing "action" or "path"`)
	}
	return nil
}

// Field bits shared by the smaller bodies, in the order of eventFields.
const (
	eDID fields = 1 << iota
	eSeq
	eTime
	eRev
	eBlocks
	eActive
	eName
	eError
)

var eventFields = []string{"did", "seq", "time", "rev", "blocks", "active", "name", "error"}

// eachField calls fn for every key of the body map; fn reads the value and returns the field bit it filled
// (0 when it skipped the value).
func eachField(d *dagcbor.Decoder, fn func(key []byte) (fields, error)) (fields, error) {
	n, err := d.MapHeader()
	if err != nil {
		return 0, err
	}
	var seen fields
	for range n {
		k, err := text(d)
		if err != nil {
			return 0, err
		}
		bit, err := fn(k)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", k, err)
		}
		seen |= bit
	}
	return seen, nil
}

func (s *Sync) decode(d *dagcbor.Decoder) (err error) {
	*s = Sync{}
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "did":
			s.DID, err = text(d)
			return eDID, err
		case "blocks":
			s.Blocks, err = d.Bytes()
			return eBlocks, err
		case "rev":
			s.Rev, err = text(d)
			return eRev, err
		case "time":
			s.Time, err = text(d)
			return eTime, err
		case "seq":
			s.Seq, err = d.Int()
			return eSeq, err
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	return seen.need(eDID|eBlocks|eRev|eTime|eSeq, eventFields...)
}

func (id *Identity) decode(d *dagcbor.Decoder) error {
	*id = Identity{}
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "did":
			id.DID, err = text(d)
			return eDID, err
		case "handle":
			id.Handle, err = optText(d)
			return 0, err
		case "time":
			id.Time, err = text(d)
			return eTime, err
		case "seq":
			id.Seq, err = d.Int()
			return eSeq, err
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	return seen.need(eDID|eTime|eSeq, eventFields...)
}

func (a *Account) decode(d *dagcbor.Decoder) error {
	*a = Account{}
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "did":
			a.DID, err = text(d)
			return eDID, err
		case "status":
			a.Status, err = optText(d)
			return 0, err
		case "active":
			a.Active, err = d.Bool()
			return eActive, err
		case "time":
			a.Time, err = text(d)
			return eTime, err
		case "seq":
			a.Seq, err = d.Int()
			return eSeq, err
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	return seen.need(eDID|eActive|eTime|eSeq, eventFields...)
}

func (in *Info) decode(d *dagcbor.Decoder) error {
	*in = Info{}
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "name":
			in.Name, err = text(d)
			return eName, err
		case "message":
			in.Message, err = optText(d)
			return 0, err
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	return seen.need(eName, eventFields...)
}

func (e *ErrorFrame) decode(d *dagcbor.Decoder) error {
	*e = ErrorFrame{}
	seen, err := eachField(d, func(k []byte) (f fields, err error) {
		switch string(k) {
		case "error":
			e.Error, err = text(d)
			return eError, err
		case "message":
			e.Message, err = optText(d)
			return 0, err
		}
		return 0, d.Skip()
	})
	if err != nil {
		return err
	}
	return seen.need(eError, eventFields...)
}
