package enrich

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/mr-tron/base58"
)

// errTombstoned is a did:plc whose current operation is a plc_tombstone: the PLC serves no document for it.
var errTombstoned = errors.New("did:plc is tombstoned")

// plcDoc is a did:plc's current state, compact enough to cache for every active account: one string packs
// the variable parts, and whatever the PLC's document formatting adds (contexts, "Multikey", the DID itself)
// is rebuilt by appendDocument. Rotation keys are not part of the document and are not kept.
type plcDoc struct {
	// b is, in document order: the alsoKnownAs entries, the verification methods (id, multibase) and the
	// services (id, type, endpoint), each section a uvarint count followed by packed strings (see
	// appendPacked), then, when normalising changed it, the handle.
	b string
	// Spans of b for the accessors, so they cost no parsing.
	hdl, pds, key plcSpan
	// ctx is the @context suffix: the key-type contexts in the order their first key appears.
	ctx uint8
	// esc: some string in b needs JSON escaping (rare), so appendDocument cannot copy blindly.
	esc bool
}

// plcSpan is a string within plcDoc.b; the PLC caps operations at 4000 bytes, so uint16 offsets suffice.
type plcSpan struct{ off, n uint16 }

func (s plcSpan) in(b string) string { return b[s.off : int(s.off)+int(s.n)] }

// The @context entries: the two every document has, then one per key type in order of first appearance.
const (
	plcContextDID      = "https://www.w3.org/ns/did/v1"
	plcContextMultikey = "https://w3id.org/security/multikey/v1"
	plcContextP256     = "https://w3id.org/security/suites/ecdsa-2019/v1"
	plcContextK256     = "https://w3id.org/security/suites/secp256k1-2019/v1"
)

// plcContextLists are the possible suffixes of @context, indexed by plcDoc.ctx.
var plcContextLists = [...]string{
	"",
	`,"` + plcContextK256 + `"`,
	`,"` + plcContextP256 + `"`,
	`,"` + plcContextK256 + `","` + plcContextP256 + `"`,
	`,"` + plcContextP256 + `","` + plcContextK256 + `"`,
}

// plcPackedConsts are strings almost every document holds, packed as their index alone.
var plcPackedConsts = [...]string{"atproto", "atproto_pds", "AtprotoPersonalDataServer", "atproto_labeler", "AtprotoLabeler"}

// plcMaxEntries bounds verificationMethods and services (the PLC accepts 10 each) so that garbage cannot make
// the quadratic duplicate check expensive.
const plcMaxEntries = 256

// parseAuditLog reads a did:plc audit log (GET /{did}/log/audit): the creation time (first entry's createdAt,
// exactly as written) and the current state (the last entry that is not nullified). The entries are decoded by
// encoding/json into a struct (a repeated key's last value wins, as with the PLC's JSON.parse); only the current
// operation's two ordered objects go through tokens.
func parseAuditLog(did string, body []byte) (doc *plcDoc, createdAt string, err error) {
	var entries []struct {
		DID       string          `json:"did"`
		Operation json.RawMessage `json:"operation"`
		Nullified bool            `json:"nullified"`
		CreatedAt string          `json:"createdAt"`
	}
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, "", fmt.Errorf("audit log: %w", err)
	}
	if len(entries) == 0 {
		return nil, "", errors.New("audit log is empty")
	}
	var current json.RawMessage
	for i, e := range entries {
		switch {
		case e.DID != "" && e.DID != did:
			return nil, "", fmt.Errorf("audit log entry %d is for %q", i, e.DID)
		case len(e.Operation) == 0 || string(e.Operation) == "null":
			return nil, "", fmt.Errorf("audit log entry %d: no operation", i)
		case e.CreatedAt == "":
			return nil, "", fmt.Errorf("audit log entry %d: no createdAt", i)
		}
		if !e.Nullified {
			current = e.Operation
		}
	}
	createdAt = entries[0].CreatedAt
	if _, err := time.Parse(time.RFC3339Nano, createdAt); err != nil {
		return nil, "", fmt.Errorf("audit log createdAt: %w", err)
	}
	if current == nil {
		return nil, "", errors.New("audit log has no valid operation")
	}
	doc, err = parseOp(current)
	if err != nil {
		return nil, "", err
	}
	return doc, createdAt, nil
}

// plcOpState is an operation's document data, in the op's key order.
type plcOpState struct {
	aka []string
	vms []plcEntry // verification method id → did:key
	svc []plcEntry // service id → type, endpoint
}

type plcEntry struct{ id, a, b string }

// parseOp turns the current operation into a plcDoc, normalising a legacy create as the PLC's normalizeOp
// does. Presence matters (a plc_operation must have its three fields), hence the pointers.
func parseOp(raw json.RawMessage) (*plcDoc, error) {
	var op struct {
		Type                string          `json:"type"`
		VerificationMethods json.RawMessage `json:"verificationMethods"`
		AlsoKnownAs         *[]string       `json:"alsoKnownAs"`
		Services            json.RawMessage `json:"services"`
		SigningKey          *string         `json:"signingKey"`
		Handle              *string         `json:"handle"`
		Service             *string         `json:"service"`
	}
	if err := json.Unmarshal(raw, &op); err != nil {
		return nil, fmt.Errorf("operation: %w", err)
	}
	var st plcOpState
	switch op.Type {
	case "plc_operation":
		if op.VerificationMethods == nil || op.AlsoKnownAs == nil || op.Services == nil {
			return nil, errors.New("plc_operation without verificationMethods, alsoKnownAs or services")
		}
		var err error
		if st.vms, err = tokStringMap(json.NewDecoder(bytes.NewReader(op.VerificationMethods))); err != nil {
			return nil, fmt.Errorf("operation verificationMethods: %w", err)
		}
		if st.svc, err = tokServices(json.NewDecoder(bytes.NewReader(op.Services))); err != nil {
			return nil, fmt.Errorf("operation services: %w", err)
		}
		st.aka = *op.AlsoKnownAs
	case "create":
		if op.SigningKey == nil || op.Handle == nil || op.Service == nil {
			return nil, errors.New("legacy create without signingKey, handle or service")
		}
		st = plcOpState{
			aka: []string{ensureAtprotoPrefix(*op.Handle)},
			vms: []plcEntry{{id: "atproto", a: *op.SigningKey}},
			svc: []plcEntry{{id: "atproto_pds", a: "AtprotoPersonalDataServer", b: ensureHTTPPrefix(*op.Service)}},
		}
	case "plc_tombstone":
		return nil, errTombstoned
	default:
		return nil, fmt.Errorf("unknown operation type %q", op.Type)
	}
	return st.pack()
}

// ensureAtprotoPrefix and ensureHTTPPrefix are the PLC's, quirks included: JavaScript's
// String.replace(string, ...) replaces the first occurrence anywhere, not only a prefix.
func ensureAtprotoPrefix(s string) string {
	if strings.HasPrefix(s, "at://") {
		return s
	}
	s = strings.Replace(s, "http://", "", 1)
	s = strings.Replace(s, "https://", "", 1)
	return "at://" + s
}

func ensureHTTPPrefix(s string) string {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return s
	}
	return "https://" + s
}

// pack builds the compact form and everything the accessors and the @context need, once.
func (st *plcOpState) pack() (*plcDoc, error) {
	d := &plcDoc{}
	n := 0
	for _, s := range st.aka {
		n += len(s) + 2
	}
	for _, e := range st.vms {
		n += len(e.id) + len(e.a) + 4
	}
	for _, e := range st.svc {
		n += len(e.id) + len(e.a) + len(e.b) + 6
	}
	b := make([]byte, 0, n+8)
	var hdl, pds, key plcSpan
	handle := ""

	b = binary.AppendUvarint(b, uint64(len(st.aka)))
	for _, s := range st.aka {
		var at plcSpan
		b, at = appendPacked(b, s, false)
		if handle == "" {
			if h, ok := strings.CutPrefix(s, "at://"); ok {
				if parsed, perr := syntax.ParseHandle(h); perr == nil {
					handle = parsed.Normalize().String()
					hdl = plcSpan{at.off + 5, at.n - 5}
				}
			}
		}
	}

	var ctx [2]string
	b = binary.AppendUvarint(b, uint64(len(st.vms)))
	for _, e := range st.vms {
		b, _ = appendPacked(b, e.id, true)
		// The document's publicKeyMultibase is the key with a leading "did:key:" cut, whatever the key is.
		var at plcSpan
		b, at = appendPacked(b, strings.TrimPrefix(e.a, "did:key:"), false)
		if e.id == "atproto" {
			key = at
		}
		if c := plcKeyContext(e.a); c != "" && ctx[0] != c && ctx[1] != c {
			if ctx[0] == "" {
				ctx[0] = c
			} else {
				ctx[1] = c
			}
		}
	}
	switch ctx {
	case [2]string{plcContextK256}:
		d.ctx = 1
	case [2]string{plcContextP256}:
		d.ctx = 2
	case [2]string{plcContextK256, plcContextP256}:
		d.ctx = 3
	case [2]string{plcContextP256, plcContextK256}:
		d.ctx = 4
	}

	b = binary.AppendUvarint(b, uint64(len(st.svc)))
	for _, e := range st.svc {
		b, _ = appendPacked(b, e.id, true)
		b, _ = appendPacked(b, e.a, true)
		var at plcSpan
		b, at = appendPacked(b, e.b, false)
		// indigo's reading (and parseDoc's): an endpoint that is no URL is no PDS.
		if e.id == "atproto_pds" && pds.n == 0 {
			if _, perr := url.Parse(e.b); perr == nil {
				pds = at
			}
		}
	}

	if handle != "" && handle != string(b[hdl.off:int(hdl.off)+int(hdl.n)]) {
		hdl = plcSpan{uint16(min(len(b), 0xffff)), uint16(len(handle))}
		b = append(b, handle...)
	}
	if len(b) > 0xffff {
		return nil, fmt.Errorf("document of %d bytes is too large", len(b))
	}
	d.b, d.hdl, d.pds, d.key = string(b), hdl, pds, key
	for _, s := range st.aka {
		d.esc = d.esc || jsonNeedsEscape(s)
	}
	for _, e := range st.vms {
		d.esc = d.esc || jsonNeedsEscape(e.id) || jsonNeedsEscape(e.a)
	}
	for _, e := range st.svc {
		d.esc = d.esc || jsonNeedsEscape(e.id) || jsonNeedsEscape(e.a) || jsonNeedsEscape(e.b)
	}
	return d, nil
}

// plcKeyContext is the @context a verification method's key adds, as the PLC's formatKeyAndContext decides it:
// did:keys of a P-256 or secp256k1 compressed point add one. The point itself is not checked (decompressing it
// costs more than the rest of an account's parse, and is done by the verifier for the keys it uses): the prefix,
// the length and the parity byte already tell a key of the PLC's from garbage.
func plcKeyContext(didKey string) string {
	mb, ok := strings.CutPrefix(didKey, "did:key:z")
	if !ok {
		return ""
	}
	b, err := base58.Decode(mb)
	if err != nil || len(b) != 35 || b[2] != 2 && b[2] != 3 {
		return ""
	}
	switch {
	case b[0] == 0xe7 && b[1] == 0x01: // multicodec secp256k1-pub
		return plcContextK256
	case b[0] == 0x80 && b[1] == 0x24: // multicodec p256-pub
		return plcContextP256
	}
	return ""
}

// appendPacked appends s as a uvarint tag and its bytes, or, if consts, as the tag alone when it is one of
// plcPackedConsts. It returns where s's bytes are in b (an empty plcSpan for a constant).
func appendPacked(b []byte, s string, consts bool) ([]byte, plcSpan) {
	for i, c := range plcPackedConsts {
		if consts && s == c {
			return binary.AppendUvarint(b, uint64(i)), plcSpan{}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(s)+len(plcPackedConsts)))
	at := plcSpan{uint16(min(len(b), 0xffff)), uint16(min(len(s), 0xffff))}
	return append(b, s...), at
}

// nextPacked reads one packed string from b at *i.
func nextPacked(b string, i *int) string {
	tag, n := uvarintString(b[*i:])
	*i += n
	if tag < uint64(len(plcPackedConsts)) {
		return plcPackedConsts[tag]
	}
	l := int(tag) - len(plcPackedConsts)
	s := b[*i : *i+l]
	*i += l
	return s
}

// uvarintString is binary.Uvarint for a string, which b is to stay immutable and shareable.
func uvarintString(s string) (uint64, int) {
	var x uint64
	var sh uint
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<sh, i + 1
		}
		x |= uint64(c&0x7f) << sh
		sh += 7
	}
	return 0, len(s) // not reached: b is written by pack
}

// appendDocument appends the DID document the PLC serves for d (GET /{did}), as compact JSON.
func (d *plcDoc) appendDocument(dst []byte, did string) []byte {
	esc := d.esc || jsonNeedsEscape(did)
	str := func(dst []byte, s string) []byte {
		if !esc {
			dst = append(dst, '"')
			dst = append(dst, s...)
			return append(dst, '"')
		}
		return appendEscaped(dst, s)
	}
	dst = append(dst, `{"@context":["`+plcContextDID+`","`+plcContextMultikey+`"`...)
	dst = append(dst, plcContextLists[d.ctx]...)
	dst = append(dst, `],"id":`...)
	dst = str(dst, did)
	dst = append(dst, `,"alsoKnownAs":[`...)
	b, i := d.b, 0
	n, w := uvarintString(b)
	i += w
	for j := uint64(0); j < n; j++ {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = str(dst, nextPacked(b, &i))
	}
	dst = append(dst, `],"verificationMethod":[`...)
	n, w = uvarintString(b[i:])
	i += w
	for j := uint64(0); j < n; j++ {
		if j > 0 {
			dst = append(dst, ',')
		}
		id := nextPacked(b, &i)
		dst = append(dst, `{"id":`...)
		if esc {
			dst = appendEscaped(dst, did+"#"+id)
		} else {
			dst = append(dst, '"')
			dst = append(dst, did...)
			dst = append(dst, '#')
			dst = append(dst, id...)
			dst = append(dst, '"')
		}
		dst = append(dst, `,"type":"Multikey","controller":`...)
		dst = str(dst, did)
		dst = append(dst, `,"publicKeyMultibase":`...)
		dst = str(dst, nextPacked(b, &i))
		dst = append(dst, '}')
	}
	dst = append(dst, `],"service":[`...)
	n, w = uvarintString(b[i:])
	i += w
	for j := uint64(0); j < n; j++ {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":`...)
		id := nextPacked(b, &i)
		if esc {
			dst = appendEscaped(dst, "#"+id)
		} else {
			dst = append(dst, `"#`...)
			dst = append(dst, id...)
			dst = append(dst, '"')
		}
		dst = append(dst, `,"type":`...)
		dst = str(dst, nextPacked(b, &i))
		dst = append(dst, `,"serviceEndpoint":`...)
		dst = str(dst, nextPacked(b, &i))
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// handle returns the first at:// alsoKnownAs that is a valid handle, lowercased, or "" (parseDoc's rule).
func (d *plcDoc) handle() string { return d.hdl.in(d.b) }

// pdsEndpoint returns the #atproto_pds service's endpoint, or "" when there is none or it is no URL.
func (d *plcDoc) pdsEndpoint() string { return d.pds.in(d.b) }

// signingKey returns the #atproto verification method's publicKeyMultibase, or "" when there is none.
func (d *plcDoc) signingKey() string { return d.key.in(d.b) }

// verificationMethod returns the publicKeyMultibase of the verification method #id, or "" when there is none.
func (d *plcDoc) verificationMethod(id string) string {
	if id == "atproto" {
		return d.signingKey() // the hot one has its span
	}
	b, i := d.b, d.skipAKA()
	n, w := uvarintString(b[i:])
	i += w
	for range n {
		vid, key := nextPacked(b, &i), nextPacked(b, &i)
		if vid == id {
			return key
		}
	}
	return ""
}

// serviceEndpoint returns the endpoint of the service #id, or "" when there is none or it is no URL (indigo's
// reading, as for pdsEndpoint).
func (d *plcDoc) serviceEndpoint(id string) string {
	b, i := d.b, d.skipAKA()
	n, w := uvarintString(b[i:])
	i += w
	for range n { // the verification methods
		nextPacked(b, &i)
		nextPacked(b, &i)
	}
	n, w = uvarintString(b[i:])
	i += w
	for range n {
		sid, _, ep := nextPacked(b, &i), nextPacked(b, &i), nextPacked(b, &i)
		if sid == id {
			if _, err := url.Parse(ep); err != nil {
				return ""
			}
			return ep
		}
	}
	return ""
}

// skipAKA returns where the verification methods start in d.b.
func (d *plcDoc) skipAKA() int {
	n, i := uvarintString(d.b)
	for range n {
		nextPacked(d.b, &i)
	}
	return i
}

// jsonNeedsEscape reports whether s cannot be written between quotes as is. Strings from the decoder are valid
// UTF-8, so only the ASCII the JSON grammar reserves matters.
func jsonNeedsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return true
		}
	}
	return false
}

// appendEscaped appends s as a JSON string. Invalid UTF-8 (only from a caller's did) becomes U+FFFD, as
// encoding/json does.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"')
}

// The small ordered decode: tokens, never maps, so that the document keeps the operation's key order.

func tokDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("got %v, want %v", tok, want)
	}
	return nil
}

func tokString(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("got %v, want a string", tok)
	}
	return s, nil
}

// tokSkip reads past one value of any kind.
func tokSkip(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// tokStringMap reads an object of strings in the order JavaScript enumerates it (see jsOrder).
func tokStringMap(dec *json.Decoder) ([]plcEntry, error) {
	if err := tokDelim(dec, '{'); err != nil {
		return nil, err
	}
	var out []plcEntry
	for dec.More() {
		k, err := tokString(dec)
		if err != nil {
			return nil, err
		}
		v, err := tokString(dec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if out, err = setPLCEntry(out, plcEntry{id: k, a: v}); err != nil {
			return nil, err
		}
	}
	_, err := dec.Token()
	return jsOrder(out), err
}

// tokServices reads {id: {type, endpoint}} in the order JavaScript enumerates it.
func tokServices(dec *json.Decoder) ([]plcEntry, error) {
	if err := tokDelim(dec, '{'); err != nil {
		return nil, err
	}
	var out []plcEntry
	for dec.More() {
		id, err := tokString(dec)
		if err != nil {
			return nil, err
		}
		if err := tokDelim(dec, '{'); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		var typ, endpoint string
		var haveType, haveEndpoint bool
		for dec.More() {
			k, err := tokString(dec)
			if err != nil {
				return nil, err
			}
			switch k {
			case "type":
				typ, err = tokString(dec)
				haveType = true
			case "endpoint":
				endpoint, err = tokString(dec)
				haveEndpoint = true
			default:
				err = tokSkip(dec)
			}
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %w", id, k, err)
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		if !haveType || !haveEndpoint {
			return nil, fmt.Errorf("service %q without type or endpoint", id)
		}
		if out, err = setPLCEntry(out, plcEntry{id: id, a: typ, b: endpoint}); err != nil {
			return nil, err
		}
	}
	_, err := dec.Token()
	return jsOrder(out), err
}

// setPLCEntry adds e, or replaces the value of an entry with its id in place: JSON.parse keeps a repeated key's
// last value at the key's first position.
func setPLCEntry(es []plcEntry, e plcEntry) ([]plcEntry, error) {
	for i := range es {
		if es[i].id == e.id {
			es[i] = e
			return es, nil
		}
	}
	if len(es) == plcMaxEntries {
		return nil, fmt.Errorf("more than %d entries", plcMaxEntries)
	}
	return append(es, e), nil
}

// jsOrder puts entries in JavaScript's property order, which Object.entries (the PLC's formatDidDoc) follows:
// integer-like keys first, ascending, then the others as inserted. The PLC's own JSON is already in that
// order; this keeps the rendering right for any other source of the same log.
func jsOrder(es []plcEntry) []plcEntry {
	idx := func(s string) (uint64, bool) {
		if s == "" || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
			return 0, false
		}
		v, err := strconv.ParseUint(s, 10, 64)
		return v, err == nil && v < 1<<32-1
	}
	sorted := true
	for i := range es {
		if _, ok := idx(es[i].id); ok && i > 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return es
	}
	sort.SliceStable(es, func(i, j int) bool {
		vi, oki := idx(es[i].id)
		vj, okj := idx(es[j].id)
		if oki && okj {
			return vi < vj
		}
		return oki && !okj
	})
	return es
}
