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
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/atkafka/atkafka/transform/filter"
)

// Metadata is one event's eventMetadata: pointers into cached entries, filled by Enricher.Resolve. Once
// resolved it is immutable, so the events of one frame share it.
type Metadata struct {
	did      string
	acct     *account
	profile  []byte
	age      int64
	ageKnown bool // so that the zero Metadata renders accountAge -1
	// missing says, per kind, why that piece is absent: 0 when present or definitively absent (no such
	// account), else the result that left it out (resError, resTimeout, resBudget) or missDeadline.
	missing [numKinds]uint8
}

// The kinds of metadata, which index Metadata.missing and label the failure metrics.
const (
	kindDoc = iota
	kindAudit
	kindProfile
	numKinds
)

var kindLabels = [numKinds]string{"doc", "audit", "profile"}

// missDeadline marks a piece whose lookup had not answered by the event's deadline.
const missDeadline = uint8(numResults) + 1

// account is what atkafka keeps of one DID, compactly: a full-network instance caches hundreds of thousands
// (TestCachedAccountHeap holds a typical one, cache entry included, under 600 bytes). The document is rendered
// per event from plc (did:plc) or kept compacted in web (did:web, rare); the creation time is kept as a number
// and rendered as the PLC writes it (JavaScript's toISOString), or kept as written when that would differ.
type account struct {
	plc    *plcDoc
	web    *webDoc
	handle string
	pds    filter.Resolution
	// createdAt is the first audit entry's createdAt in Unix milliseconds; 0 for did:web.
	createdAt int64
	// createdRaw is that createdAt as written, when rendering createdAt would not give it back.
	createdRaw *string
	// keys are the verification methods' keys asked for so far (by the verifier, the labels source), parsed.
	keys atomic.Pointer[parsedKey]
}

// webDoc is a did:web document, compacted, and its PDS endpoint.
type webDoc struct {
	doc     []byte
	pdsHost string
}

// createdLayout is how the PLC writes createdAt.
const createdLayout = "2006-01-02T15:04:05.000Z"

// pdsHost is the #atproto_pds endpoint as written in the document.
func (a *account) pdsHost() string {
	if a.plc != nil {
		return a.plc.pdsEndpoint()
	}
	return a.web.pdsHost
}

// appendCreated appends the creation time as the PLC wrote it.
func (a *account) appendCreated(dst []byte) []byte {
	if a.createdRaw != nil {
		return appendEscaped(dst, *a.createdRaw)
	}
	dst = append(dst, '"')
	dst = time.UnixMilli(a.createdAt).UTC().AppendFormat(dst, createdLayout)
	return append(dst, '"')
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
		if a := m.acct; a != nil {
			dst = append(dst, `"didDocument":`...)
			if a.plc != nil {
				dst = a.plc.appendDocument(dst, m.did)
			} else {
				dst = append(dst, a.web.doc...)
			}
			dst = append(dst, ',')
			if pds := a.pdsHost(); pds != "" {
				dst = append(dst, `"pdsHost":`...)
				dst = appendEscaped(dst, pds)
				dst = append(dst, ',')
			}
			if a.handle != "" {
				dst = append(dst, `"handle":`...)
				dst = appendEscaped(dst, a.handle)
				dst = append(dst, ',')
			}
			if a.createdAt != 0 {
				dst = append(dst, `"didCreatedAt":`...)
				dst = a.appendCreated(dst)
				dst = append(dst, ',')
			}
		}
		if m.ageKnown {
			age = m.age
		}
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
	if m == nil || m.acct == nil {
		return ""
	}
	return m.acct.handle
}

// PDSHost returns the #atproto_pds service endpoint as written in the DID document, or "" if unknown.
func (m *Metadata) PDSHost() string {
	if m == nil || m.acct == nil {
		return ""
	}
	return m.acct.pdsHost()
}

// PDS resolves the account's PDS for the service filter: filter.Unknown when the document could not be looked
// up (the filter fails open), NoPDS when there is no such account or its document names no PDS.
func (m *Metadata) PDS() filter.Resolution {
	switch {
	case m == nil || m.did == "":
		return filter.Resolution{Outcome: filter.NoPDS}
	case m.acct != nil:
		return m.acct.pds
	case m.missing[kindDoc] != 0:
		return filter.Resolution{Outcome: filter.Unknown}
	}
	return filter.Resolution{Outcome: filter.NoPDS}
}

// AccountAge returns whole seconds since the DID was created, or -1 if unknown.
func (m *Metadata) AccountAge() int64 {
	if m == nil || !m.ageKnown {
		return -1
	}
	return m.age
}

// CreatedAt returns when the DID was created (first PLC audit log entry), or the zero time if unknown.
func (m *Metadata) CreatedAt() time.Time {
	if m == nil || m.acct == nil || m.acct.createdAt == 0 {
		return time.Time{}
	}
	return time.UnixMilli(m.acct.createdAt).UTC()
}

// fetchAccount fetches what atkafka keeps of did: for did:plc one request, its PLC audit log, from which both
// the document and the creation time are derived; for did:web the host's well-known document. Anything that is
// not a usable document of this DID (bad syntax, other DID methods, wrong id, a tombstone) is a definitive
// absence: asking again would get the same answer.
func (e *Enricher) fetchAccount(ctx context.Context, did string, deadline time.Time) (*account, result) {
	webHost, ok := atprotoDID(did)
	if !ok {
		return nil, resNotFound
	}
	if webHost != "" {
		body, res := e.web.get(ctx, e.docReqs, e.webURL(webHost), deadline)
		if res != resOK {
			return nil, res
		}
		a, err := webAccount(did, body)
		if err != nil {
			e.log.Debug("enrich: unusable DID document", "did", did, "err", err)
			return nil, resNotFound
		}
		return a, resOK
	}
	body, res := e.plc.get(ctx, e.docReqs, e.plcHost+"/"+did+"/log/audit", deadline)
	if res != resOK {
		return nil, res
	}
	a, err := plcAccount(did, body)
	if err != nil {
		if !errors.Is(err, errTombstoned) {
			e.log.Debug("enrich: unusable PLC audit log", "did", did, "err", err)
		}
		return nil, resNotFound
	}
	return a, resOK
}

// plcAccount reads what atkafka keeps of a did:plc from its audit log.
func plcAccount(did string, auditLog []byte) (*account, error) {
	doc, created, err := parseAuditLog(did, auditLog)
	if err != nil {
		return nil, err
	}
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil {
		return nil, fmt.Errorf("createdAt: %w", err)
	}
	a := &account{plc: doc, createdAt: max(t.UnixMilli(), 1)}
	if t.UTC().Format(createdLayout) != created {
		a.createdRaw = &created
	}
	a.setIdentity(doc.handle(), doc.pdsEndpoint())
	return a, nil
}

// setIdentity keeps the handle and PDS the way indigo's identity package reads them (first at:// alsoKnownAs
// that is a valid handle, lowercased; the atproto_pds service), so that atkafka and other atproto tools agree.
// ToLower and url.Parse return substrings of their input where they can: an account costs no copies of them.
func (a *account) setIdentity(handle, pds string) {
	if h, err := syntax.ParseHandle(handle); err == nil {
		a.handle = h.Normalize().String()
	}
	a.pds = filter.Resolution{Outcome: filter.NoPDS}
	if pds == "" {
		return
	}
	if _, err := url.Parse(pds); err == nil {
		a.pds = filter.ResolvedEndpoint(pds)
	}
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

// didDocument holds the few fields of a did:web document atkafka reads.
type didDocument struct {
	ID          string   `json:"id"`
	AlsoKnownAs []string `json:"alsoKnownAs"`
	Service     []struct {
		ID              string          `json:"id"`
		ServiceEndpoint json.RawMessage `json:"serviceEndpoint"`
	} `json:"service"`
}

// webAccount reads a did:web document, kept compacted as served.
func webAccount(did string, body []byte) (*account, error) {
	var doc didDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	if doc.ID != did {
		return nil, fmt.Errorf("document is for %q", doc.ID)
	}
	var pds, handle string
	for _, s := range doc.Service {
		if _, frag, ok := strings.Cut(s.ID, "#"); ok && frag == "atproto_pds" {
			_ = json.Unmarshal(s.ServiceEndpoint, &pds)
			break
		}
	}
	for _, aka := range doc.AlsoKnownAs {
		if h, ok := strings.CutPrefix(aka, "at://"); ok {
			if _, err := syntax.ParseHandle(h); err == nil {
				handle = h
				break
			}
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return nil, err
	}
	if _, err := url.Parse(pds); err != nil {
		pds = ""
	}
	a := &account{web: &webDoc{doc: buf.Bytes(), pdsHost: pds}}
	a.setIdentity(handle, pds)
	return a, nil
}
