package enrich

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/transform/filter"
)

// Metadata is one event's eventMetadata. It points into cached entries and is immutable, so it is cheap to
// make per event and safe to share.
type Metadata struct {
	doc     *docInfo
	audit   *auditInfo
	profile []byte
	age     int64
}

// docInfo is what a DID document contributes, parsed and rendered once per fetch rather than once per event.
type docInfo struct {
	pdsHost string
	handle  string
	pds     filter.Resolution
	// fields is `"didDocument":{...},"pdsHost":"...","handle":"...",` (absent fields left out, always ending
	// in a comma), ready to be copied into every event.
	fields []byte
	// doc is the document alone, within fields.
	doc []byte

	// The atproto signing key, parsed from doc on first use (by --verify-commits only: see SigningKey).
	keyOnce sync.Once
	key     atcrypto.PublicKey
	keyErr  error
}

// auditInfo is the account's creation time from the first entry of its PLC audit log.
type auditInfo struct {
	createdAt time.Time
	fields    []byte // `"didCreatedAt":"...",` with the time exactly as the PLC wrote it
}

// AppendJSON appends the metadata as a JSON object:
//
//	{"didDocument":{...},"pdsHost":"https://...","handle":"alice.test","didCreatedAt":"...","accountAge":N,"profile":{...}}
//
// Unknown fields are left out, except accountAge, which is -1 when unknown, because existing rules read it
// unconditionally. A nil Metadata renders as {"accountAge":-1}.
func (m *Metadata) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	age := int64(-1)
	if m != nil {
		if m.doc != nil {
			dst = append(dst, m.doc.fields...)
		}
		if m.audit != nil {
			dst = append(dst, m.audit.fields...)
		}
		age = m.age
	}
	dst = append(dst, `"accountAge":`...)
	dst = strconv.AppendInt(dst, age, 10)
	if m != nil && m.profile != nil {
		dst = append(dst, `,"profile":`...)
		dst = append(dst, m.profile...)
	}
	return append(dst, '}')
}

// Handle returns the handle the DID document claims (not verified against the handle's DNS or well-known
// record: that would cost a lookup per account), or "" if unknown.
func (m *Metadata) Handle() string {
	if m == nil || m.doc == nil {
		return ""
	}
	return m.doc.handle
}

// PDSHost returns the #atproto_pds service endpoint as written in the DID document, or "" if unknown.
func (m *Metadata) PDSHost() string {
	if m == nil || m.doc == nil {
		return ""
	}
	return m.doc.pdsHost
}

// AccountAge returns whole seconds since the DID was created, or -1 if unknown.
func (m *Metadata) AccountAge() int64 {
	if m == nil {
		return -1
	}
	return m.age
}

// CreatedAt returns when the DID was created (first PLC audit log entry), or the zero time if unknown.
func (m *Metadata) CreatedAt() time.Time {
	if m == nil || m.audit == nil {
		return time.Time{}
	}
	return m.audit.createdAt
}

// fetchDoc fetches and parses did's document: did:plc from the PLC, did:web from the host's well-known URL.
// Anything that is not a usable document of this DID (bad syntax, other DID methods, wrong id) is a definitive
// absence: asking again would get the same answer.
func (e *Enricher) fetchDoc(ctx context.Context, did string) (*docInfo, result) {
	webHost, ok := atprotoDID(did)
	if !ok {
		return nil, resNotFound
	}
	ep, u := e.plc, e.plcHost+"/"+did
	if webHost != "" {
		ep, u = e.web, e.webURL(webHost)
	}
	body, res := ep.get(ctx, e.docReqs, u)
	if res != resOK {
		return nil, res
	}
	info, err := parseDoc(did, body)
	if err != nil {
		e.log.Debug("enrich: unusable DID document", "did", did, "err", err)
		return nil, resNotFound
	}
	return info, resOK
}

// atprotoDID reports whether did is a DID atproto uses (did:plc, or hostname-level did:web), returning the
// lowercased host of a did:web. Checked before any request so that garbage in events costs no lookups.
// Requiring a handle-shaped hostname for did:web also keeps event data from pointing requests at IP
// addresses or single-label internal names.
func atprotoDID(did string) (webHost string, ok bool) {
	switch {
	case strings.HasPrefix(did, "did:plc:"):
		_, err := syntax.ParseDID(did)
		return "", err == nil
	case strings.HasPrefix(did, "did:web:"):
		host := strings.TrimPrefix(did, "did:web:")
		if _, err := syntax.ParseHandle(host); err != nil {
			return "", false
		}
		return strings.ToLower(host), true
	default:
		return "", false
	}
}

// didDocument holds the few fields of a DID document atkafka reads.
type didDocument struct {
	ID          string   `json:"id"`
	AlsoKnownAs []string `json:"alsoKnownAs"`
	Service     []struct {
		ID              string          `json:"id"`
		ServiceEndpoint json.RawMessage `json:"serviceEndpoint"`
	} `json:"service"`
}

// parseDoc extracts the PDS endpoint and handle the way indigo's identity package does (first service whose
// id fragment is atproto_pds; first at:// alsoKnownAs that is a valid handle, lowercased) so that atkafka and
// other atproto tools agree, and renders the document's JSON fields once.
func parseDoc(did string, body []byte) (*docInfo, error) {
	var doc didDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	if doc.ID != did {
		return nil, fmt.Errorf("document is for %q", doc.ID)
	}
	info := &docInfo{pds: filter.Resolution{Outcome: filter.NoPDS}}
	for _, s := range doc.Service {
		_, frag, ok := strings.Cut(s.ID, "#")
		if !ok || frag != "atproto_pds" {
			continue
		}
		var endpoint string
		if json.Unmarshal(s.ServiceEndpoint, &endpoint) == nil {
			if _, err := url.Parse(endpoint); err == nil {
				info.pdsHost = endpoint
				info.pds = filter.ResolvedEndpoint(endpoint)
			}
		}
		break
	}
	for _, aka := range doc.AlsoKnownAs {
		if h, ok := strings.CutPrefix(aka, "at://"); ok {
			if hdl, err := syntax.ParseHandle(h); err == nil {
				info.handle = hdl.Normalize().String()
				break
			}
		}
	}
	var buf bytes.Buffer
	buf.WriteString(`"didDocument":`)
	if err := json.Compact(&buf, body); err != nil {
		return nil, err
	}
	docStart, docEnd := len(`"didDocument":`), buf.Len()
	if info.pdsHost != "" {
		buf.WriteString(`,"pdsHost":`)
		writeString(&buf, info.pdsHost)
	}
	if info.handle != "" {
		buf.WriteString(`,"handle":`)
		writeString(&buf, info.handle)
	}
	buf.WriteByte(',')
	info.fields = buf.Bytes()
	info.doc = info.fields[docStart:docEnd]
	return info, nil
}

func writeString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// fetchAudit reads the creation time from the first entry of a plc DID's audit log. Only the first element
// is decoded: audit logs of busy accounts are long, and the rest is not needed.
func (e *Enricher) fetchAudit(ctx context.Context, did string) (*auditInfo, result) {
	if _, ok := atprotoDID(did); !ok {
		return nil, resNotFound
	}
	body, res := e.plc.get(ctx, e.auditReq, e.plcHost+"/"+did+"/log/audit")
	if res != resOK {
		return nil, res
	}
	createdAt, raw, err := firstCreatedAt(body)
	if err != nil {
		e.log.Debug("enrich: unusable PLC audit log", "did", did, "err", err)
		return nil, resNotFound
	}
	var buf bytes.Buffer
	buf.WriteString(`"didCreatedAt":`)
	writeString(&buf, raw)
	buf.WriteByte(',')
	return &auditInfo{createdAt: createdAt, fields: buf.Bytes()}, resOK
}

func firstCreatedAt(body []byte) (time.Time, string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return time.Time{}, "", errors.New("not a JSON array")
	}
	if !dec.More() {
		return time.Time{}, "", errors.New("empty audit log")
	}
	var first struct {
		CreatedAt string `json:"createdAt"`
	}
	if err := dec.Decode(&first); err != nil {
		return time.Time{}, "", err
	}
	t, err := time.Parse(time.RFC3339Nano, first.CreatedAt)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("createdAt: %w", err)
	}
	return t, first.CreatedAt, nil
}

// fetchProfile fetches the AppView's profile view of did, compacted once so events carry it verbatim.
func (e *Enricher) fetchProfile(ctx context.Context, did string) ([]byte, result) {
	if _, ok := atprotoDID(did); !ok {
		return nil, resNotFound
	}
	body, res := e.api.get(ctx, e.profReqs, e.apiHost+"/xrpc/app.bsky.actor.getProfile?actor="+url.QueryEscape(did))
	if res != resOK {
		return nil, res
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		e.log.Debug("enrich: unusable profile", "did", did, "err", err)
		return nil, resNotFound
	}
	return buf.Bytes(), resOK
}
