package enrich

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/atkafka/atkafka/testenv"
)

// auditLogFor builds the one-entry audit log the PLC holds for a document it serves: the plc_operation with
// the document's alsoKnownAs, verification methods (as did:keys) and services, keys in the document's order.
func auditLogFor(t testing.TB, did string, served []byte) []byte {
	t.Helper()
	var doc testenv.PLCDocument
	if err := json.Unmarshal(served, &doc); err != nil {
		t.Fatalf("%s: %v", did, err)
	}
	var op bytes.Buffer
	op.WriteString(`{"sig":"c2ln","prev":null,"type":"plc_operation","services":{`)
	for i, s := range doc.Service {
		if i > 0 {
			op.WriteByte(',')
		}
		fmt.Fprintf(&op, `%s:{"type":%s,"endpoint":%s}`, jsonText(t, strings.TrimPrefix(s.ID, "#")), jsonText(t, s.Type), jsonText(t, s.ServiceEndpoint))
	}
	op.WriteString(`},"alsoKnownAs":`)
	op.WriteString(jsonText(t, doc.AlsoKnownAs))
	op.WriteString(`,"rotationKeys":["did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg"],"verificationMethods":{`)
	for i, vm := range doc.VerificationMethod {
		if i > 0 {
			op.WriteByte(',')
		}
		_, frag, _ := strings.Cut(vm.ID, "#")
		fmt.Fprintf(&op, `%s:%s`, jsonText(t, frag), jsonText(t, "did:key:"+vm.PublicKeyMultibase))
	}
	op.WriteString(`}}`)
	return fmt.Appendf(nil, `[{"did":%q,"operation":%s,"cid":"bafyreie","nullified":false,"createdAt":"2024-03-01T12:00:00.123Z"}]`, did, op.Bytes())
}

func jsonText(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkDocument fails unless got is the JSON value want is, with verification methods and services in the
// same order (DeepEqual on decoded arrays checks that too; the ids make a failure readable).
func checkDocument(t testing.TB, did string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: rendered invalid JSON %s: %v", did, got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: served invalid JSON: %v", did, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: rendered\n%s\nserved\n%s", did, got, want)
		return
	}
	var gd, wd testenv.PLCDocument
	json.Unmarshal(got, &gd)
	json.Unmarshal(want, &wd)
	for i := range wd.VerificationMethod {
		if gd.VerificationMethod[i].ID != wd.VerificationMethod[i].ID {
			t.Errorf("%s: verification method %d is %s, want %s", did, i, gd.VerificationMethod[i].ID, wd.VerificationMethod[i].ID)
		}
	}
	for i := range wd.Service {
		if gd.Service[i].ID != wd.Service[i].ID {
			t.Errorf("%s: service %d is %s, want %s", did, i, gd.Service[i].ID, wd.Service[i].ID)
		}
	}
}

// TestPLCDocCorpus renders every real document of the relay capture (as plc.directory served it) from the
// operation the PLC holds for it.
func TestPLCDocCorpus(t *testing.T) {
	docs := testenv.CorpusDIDDocs(t)
	if len(docs) != 148 {
		t.Fatalf("corpus has %d documents, want 148", len(docs))
	}
	for did, served := range docs {
		log := auditLogFor(t, did, served)
		doc, createdAt, err := parseAuditLog(did, log)
		if err != nil {
			t.Fatalf("%s: %v\n%s", did, err, log)
		}
		if createdAt != "2024-03-01T12:00:00.123Z" {
			t.Errorf("%s: createdAt %q", did, createdAt)
		}
		checkDocument(t, did, doc.appendDocument(nil, did), served)

		// The accessors agree with webAccount's reading of the served document itself.
		info, err := webAccount(did, served)
		if err != nil {
			t.Fatalf("%s: %v", did, err)
		}
		if doc.handle() != info.handle || doc.pdsEndpoint() != info.pdsHost() {
			t.Errorf("%s: handle %q pds %q, the document says %q %q", did, doc.handle(), doc.pdsEndpoint(), info.handle, info.pdsHost())
		}
		var sd testenv.PLCDocument
		json.Unmarshal(served, &sd)
		if doc.signingKey() != sd.VerificationMethod[0].PublicKeyMultibase {
			t.Errorf("%s: signingKey %q", did, doc.signingKey())
		}
		if _, err := atcrypto.ParsePublicMultibase(doc.signingKey()); err != nil {
			t.Errorf("%s: signingKey: %v", did, err)
		}
	}
}

// Test keys: a secp256k1 and a P-256 did:key.
var (
	plcTestK256 = mustDIDKey(atcrypto.GeneratePrivateKeyK256())
	plcTestP256 = mustDIDKey(atcrypto.GeneratePrivateKeyP256())
)

func mustDIDKey[K atcrypto.PrivateKey](k K, err error) string {
	if err != nil {
		panic(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		panic(err)
	}
	return pub.DIDKey()
}

const plcTestDID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

// entryJSON is one audit log entry around op.
func entryJSON(op string, nullified bool, createdAt string) string {
	return fmt.Sprintf(`{"did":%q,"operation":%s,"cid":"bafyrei","nullified":%t,"createdAt":%q}`, plcTestDID, op, nullified, createdAt)
}

func plcOp(aka, vms, services string) string {
	return fmt.Sprintf(`{"type":"plc_operation","rotationKeys":[],"verificationMethods":%s,"alsoKnownAs":%s,"services":%s,"prev":null,"sig":"x"}`, vms, aka, services)
}

func pdsService(endpoint string) string {
	return fmt.Sprintf(`{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":%q}}`, endpoint)
}

// expectedDoc is the document formatDidDoc makes, written out by hand.
func expectedDoc(contexts, aka, vms, services string) string {
	return fmt.Sprintf(`{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"%s],"id":%q,"alsoKnownAs":%s,"verificationMethod":%s,"service":%s}`,
		contexts, plcTestDID, aka, vms, services)
}

func vmJSON(id, didKey string) string {
	return fmt.Sprintf(`{"id":"%s#%s","type":"Multikey","controller":%q,"publicKeyMultibase":%q}`, plcTestDID, id, plcTestDID, strings.TrimPrefix(didKey, "did:key:"))
}

func TestParseAuditLog(t *testing.T) {
	const k256Ctx = `,"https://w3id.org/security/suites/secp256k1-2019/v1"`
	const p256Ctx = `,"https://w3id.org/security/suites/ecdsa-2019/v1"`
	atproto := fmt.Sprintf(`{"atproto":%q}`, plcTestK256)
	alice := `["at://alice.test"]`
	pds := pdsService("https://pds.example.com")
	pdsDoc := `[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]`
	tests := []struct {
		name             string
		log              string
		want             string // the document
		handle, pds, key string
		createdAt        string
	}{{
		name:      "one operation",
		log:       "[" + entryJSON(plcOp(alice, atproto, pds), false, "2023-05-01T00:00:00.000Z") + "]",
		want:      expectedDoc(k256Ctx, alice, "["+vmJSON("atproto", plcTestK256)+"]", pdsDoc),
		handle:    "alice.test",
		pds:       "https://pds.example.com",
		key:       strings.TrimPrefix(plcTestK256, "did:key:"),
		createdAt: "2023-05-01T00:00:00.000Z",
	}, {
		name: "handle change, then a nullified operation",
		log: "[" + entryJSON(plcOp(alice, atproto, pds), false, "2023-05-01T00:00:00Z") + "," +
			entryJSON(plcOp(`["at://Bob.Test","https://bob.example"]`, atproto, pds), false, "2023-06-01T00:00:00.000Z") + "," +
			entryJSON(plcOp(`["at://mallory.test"]`, atproto, pdsService("https://evil.example")), true, "2023-06-02T00:00:00.000Z") + "]",
		want:      expectedDoc(k256Ctx, `["at://Bob.Test","https://bob.example"]`, "["+vmJSON("atproto", plcTestK256)+"]", pdsDoc),
		handle:    "bob.test",
		pds:       "https://pds.example.com",
		key:       strings.TrimPrefix(plcTestK256, "did:key:"),
		createdAt: "2023-05-01T00:00:00Z",
	}, {
		name: "nullified operation followed by the recovery",
		log: "[" + entryJSON(plcOp(alice, atproto, pds), false, "2023-05-01T00:00:00.000Z") + "," +
			entryJSON(plcOp(`["at://mallory.test"]`, atproto, pds), true, "2023-06-02T00:00:00.000Z") + "," +
			entryJSON(plcOp(`["at://carol.test"]`, atproto, pds), false, "2023-06-03T00:00:00.000Z") + "]",
		want:      expectedDoc(k256Ctx, `["at://carol.test"]`, "["+vmJSON("atproto", plcTestK256)+"]", pdsDoc),
		handle:    "carol.test",
		pds:       "https://pds.example.com",
		key:       strings.TrimPrefix(plcTestK256, "did:key:"),
		createdAt: "2023-05-01T00:00:00.000Z",
	}, {
		// The shape of the first accounts' genesis (did:plc:ewvi7nxzyoun6zhxrhs64oiz is atproto.com's), with a
		// handle and service the PLC's normalizeOp has to fix up.
		name: "legacy create",
		log: "[" + entryJSON(fmt.Sprintf(`{"sig":"x","prev":null,"type":"create","handle":"https://Atproto.com","service":"bsky.social","signingKey":%q,"recoveryKey":%q}`, plcTestK256, plcTestP256),
			false, "2022-11-17T00:35:16.391Z") + "]",
		want: expectedDoc(k256Ctx, `["at://Atproto.com"]`, "["+vmJSON("atproto", plcTestK256)+"]",
			`[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://bsky.social"}]`),
		handle:    "atproto.com",
		pds:       "https://bsky.social",
		key:       strings.TrimPrefix(plcTestK256, "did:key:"),
		createdAt: "2022-11-17T00:35:16.391Z",
	}, {
		name: "legacy create, then an operation",
		log: "[" + entryJSON(fmt.Sprintf(`{"sig":"x","prev":null,"type":"create","handle":"alice.test","service":"https://bsky.social","signingKey":%q,"recoveryKey":%q}`, plcTestK256, plcTestP256),
			false, "2022-11-17T00:35:16.391Z") + "," + entryJSON(plcOp(`["at://dave.test"]`, atproto, pds), false, "2023-01-01T00:00:00.000Z") + "]",
		want:      expectedDoc(k256Ctx, `["at://dave.test"]`, "["+vmJSON("atproto", plcTestK256)+"]", pdsDoc),
		handle:    "dave.test",
		pds:       "https://pds.example.com",
		key:       strings.TrimPrefix(plcTestK256, "did:key:"),
		createdAt: "2022-11-17T00:35:16.391Z",
	}, {
		// Verification methods and services in the operation's key order, @context in the order of the key types'
		// first appearance, keys the PLC cannot parse rendered without a context.
		name: "key order and contexts",
		log: "[" + entryJSON(plcOp(`[]`,
			fmt.Sprintf(`{"zeta":%q,"atproto":%q,"alpha":%q,"bls":"did:key:zUC7K4ndUaGZgV7Cp2yJy6JtMoUHY6u7tkcSYUvPrEidqBmLCTLmi6d5WvwnUqejscAkERJ3bfjEiSYtdPkRSE2kSa11hFBr","odd":"zNotADidKey"}`, plcTestP256, plcTestK256, plcTestK256),
			`{"atproto_labeler":{"type":"AtprotoLabeler","endpoint":"https://mod.example"},"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"},"a":{"type":"X","endpoint":"y"}}`),
			false, "2023-05-01T00:00:00.000Z") + "]",
		want: expectedDoc(p256Ctx+k256Ctx, `[]`, "["+vmJSON("zeta", plcTestP256)+","+vmJSON("atproto", plcTestK256)+","+vmJSON("alpha", plcTestK256)+","+
			vmJSON("bls", "did:key:zUC7K4ndUaGZgV7Cp2yJy6JtMoUHY6u7tkcSYUvPrEidqBmLCTLmi6d5WvwnUqejscAkERJ3bfjEiSYtdPkRSE2kSa11hFBr")+","+vmJSON("odd", "zNotADidKey")+"]",
			`[{"id":"#atproto_labeler","type":"AtprotoLabeler","serviceEndpoint":"https://mod.example"},{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"},{"id":"#a","type":"X","serviceEndpoint":"y"}]`),
		pds: "https://pds.example.com",
		key: strings.TrimPrefix(plcTestK256, "did:key:"),
	}, {
		// JSON.parse: integer-like keys enumerate first, ascending; a repeated key keeps its first place and
		// its last value.
		name: "JavaScript property order",
		log: "[" + entryJSON(plcOp(`["at://x.test"]`,
			fmt.Sprintf(`{"atproto":"did:key:zA","10":"did:key:zB","2":"did:key:zC","02":"did:key:zD","atproto":%q}`, plcTestP256), `{}`),
			false, "2023-05-01T00:00:00.000Z") + "]",
		want:   expectedDoc(p256Ctx, `["at://x.test"]`, "["+vmJSON("2", "did:key:zC")+","+vmJSON("10", "did:key:zB")+","+vmJSON("atproto", plcTestP256)+","+vmJSON("02", "did:key:zD")+"]", `[]`),
		handle: "x.test",
		key:    strings.TrimPrefix(plcTestP256, "did:key:"),
	}, {
		name: "strings that need escaping",
		log: "[" + entryJSON(plcOp(`["at://not a handle\"","at://b.test"]`, `{"a\\b":"did:key:z\u0001"}`,
			`{"atproto_pds":{"type":"\u2028<>&","endpoint":"https://x.example/\"\n"}}`), false, "2023-05-01T00:00:00.000Z") + "]",
		want: expectedDoc(``, `["at://not a handle\"","at://b.test"]`, `[{"id":"`+plcTestDID+`#a\\b","type":"Multikey","controller":"`+plcTestDID+`","publicKeyMultibase":"z\u0001"}]`,
			`[{"id":"#atproto_pds","type":"\u2028<>&","serviceEndpoint":"https://x.example/\"\n"}]`),
		handle: "b.test", // and no PDS: the endpoint is no URL

	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, createdAt, err := parseAuditLog(plcTestDID, []byte(tc.log))
			if err != nil {
				t.Fatal(err)
			}
			checkDocument(t, plcTestDID, doc.appendDocument(nil, plcTestDID), []byte(tc.want))
			if got := string(doc.appendDocument([]byte("prefix"), plcTestDID)); !strings.HasPrefix(got, "prefix{") {
				t.Errorf("appendDocument does not append: %s", got)
			}
			if doc.handle() != tc.handle || doc.pdsEndpoint() != tc.pds || doc.signingKey() != tc.key {
				t.Errorf("handle %q pds %q key %q, want %q %q %q", doc.handle(), doc.pdsEndpoint(), doc.signingKey(), tc.handle, tc.pds, tc.key)
			}
			// The generic accessors (labelers' keys and endpoints) agree with the spans.
			if ep := doc.serviceEndpoint("atproto_pds"); ep != tc.pds {
				t.Errorf("serviceEndpoint(atproto_pds) %q, want %q", ep, tc.pds)
			}
			if tc.createdAt != "" && createdAt != tc.createdAt {
				t.Errorf("createdAt %q, want %q", createdAt, tc.createdAt)
			}
		})
	}
}

// Every verification method and service is kept and found by its id, not only the account's own.
func TestPLCDocMethodsAndServices(t *testing.T) {
	log := "[" + entryJSON(plcOp(`["at://mod.test"]`, fmt.Sprintf(`{"atproto":%q,"atproto_label":%q}`, plcTestK256, plcTestP256),
		`{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"},"atproto_labeler":{"type":"AtprotoLabeler","endpoint":"https://mod.example"}}`),
		false, "2023-05-01T00:00:00.000Z") + "]"
	doc, _, err := parseAuditLog(plcTestDID, []byte(log))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"atproto": plcTestK256, "atproto_label": plcTestP256, "other": ""} {
		if got := doc.verificationMethod(id); got != strings.TrimPrefix(want, "did:key:") {
			t.Errorf("verificationMethod(%s) = %q, want %q", id, got, want)
		}
	}
	for id, want := range map[string]string{"atproto_pds": "https://pds.example.com", "atproto_labeler": "https://mod.example", "other": ""} {
		if got := doc.serviceEndpoint(id); got != want {
			t.Errorf("serviceEndpoint(%s) = %q, want %q", id, got, want)
		}
	}
	acct := &account{plc: doc}
	for range 2 { // parsed, then from the list
		if k, err := acct.publicKey("atproto_label"); err != nil || k.DIDKey() != plcTestP256 {
			t.Errorf("publicKey(atproto_label) = %v, %v", k, err)
		}
		if k, err := acct.publicKey("atproto"); err != nil || k.DIDKey() != plcTestK256 {
			t.Errorf("publicKey(atproto) = %v, %v", k, err)
		}
	}
	if _, err := acct.publicKey("other"); !errors.Is(err, identity.ErrKeyNotDeclared) {
		t.Errorf("publicKey(other): %v, want ErrKeyNotDeclared", err)
	}
}

func TestParseAuditLogTombstone(t *testing.T) {
	create := entryJSON(plcOp(`["at://alice.test"]`, fmt.Sprintf(`{"atproto":%q}`, plcTestK256), pdsService("https://pds.example.com")), false, "2023-05-01T00:00:00.000Z")
	tombstone := entryJSON(`{"type":"plc_tombstone","prev":"bafyrei","sig":"x"}`, false, "2023-06-01T00:00:00.000Z")
	if _, _, err := parseAuditLog(plcTestDID, []byte("["+create+","+tombstone+"]")); !errors.Is(err, errTombstoned) {
		t.Errorf("tombstoned: err %v, want errTombstoned", err)
	}
	// A tombstone that was itself nullified by a recovery leaves the operation before it current.
	nullified := entryJSON(`{"type":"plc_tombstone","prev":"bafyrei","sig":"x"}`, true, "2023-06-01T00:00:00.000Z")
	doc, _, err := parseAuditLog(plcTestDID, []byte("["+create+","+nullified+"]"))
	if err != nil || doc.handle() != "alice.test" {
		t.Errorf("nullified tombstone: %v", err)
	}
}

func TestParseAuditLogErrors(t *testing.T) {
	valid := entryJSON(plcOp(`["at://alice.test"]`, `{}`, `{}`), false, "2023-05-01T00:00:00.000Z")
	for name, log := range map[string]string{
		"empty body":          ``,
		"not JSON":            `<html>`,
		"object":              `{"did":"x"}`,
		"empty log":           `[]`,
		"unterminated":        "[" + valid,
		"trailing comma":      "[" + valid + ",]",
		"trailing data":       "[" + valid + "]]",
		"entry not an object": `[1]`,
		"no operation":        fmt.Sprintf(`[{"did":%q,"nullified":false,"createdAt":"2023-05-01T00:00:00.000Z"}]`, plcTestDID),
		"no createdAt":        fmt.Sprintf(`[{"did":%q,"operation":%s,"nullified":false}]`, plcTestDID, plcOp(`[]`, `{}`, `{}`)),
		"bad createdAt":       strings.Replace("["+valid+"]", "2023-05-01T00:00:00.000Z", "yesterday", 1),
		"other DID":           strings.Replace("["+valid+"]", plcTestDID, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1),
		"all nullified":       "[" + strings.Replace(valid, `"nullified":false`, `"nullified":true`, 1) + "]",
		"unknown type":        "[" + entryJSON(`{"type":"plc_something"}`, false, "2023-05-01T00:00:00.000Z") + "]",
		"no type":             "[" + entryJSON(`{"alsoKnownAs":[],"verificationMethods":{},"services":{}}`, false, "2023-05-01T00:00:00.000Z") + "]",
		"missing services":    "[" + entryJSON(`{"type":"plc_operation","alsoKnownAs":[],"verificationMethods":{}}`, false, "2023-05-01T00:00:00.000Z") + "]",
		"aka not strings":     "[" + entryJSON(plcOp(`[1]`, `{}`, `{}`), false, "2023-05-01T00:00:00.000Z") + "]",
		"key not a string":    "[" + entryJSON(plcOp(`[]`, `{"atproto":{}}`, `{}`), false, "2023-05-01T00:00:00.000Z") + "]",
		"service no endpoint": "[" + entryJSON(plcOp(`[]`, `{}`, `{"atproto_pds":{"type":"x"}}`), false, "2023-05-01T00:00:00.000Z") + "]",
		"service a string":    "[" + entryJSON(plcOp(`[]`, `{}`, `{"atproto_pds":"x"}`), false, "2023-05-01T00:00:00.000Z") + "]",
		"legacy incomplete":   "[" + entryJSON(`{"type":"create","handle":"a.test"}`, false, "2023-05-01T00:00:00.000Z") + "]",
		"operation a string":  "[" + entryJSON(`"x"`, false, "2023-05-01T00:00:00.000Z") + "]",
		"nullified a string":  "[" + strings.Replace(valid, `"nullified":false`, `"nullified":"no"`, 1) + "]",
	} {
		if doc, _, err := parseAuditLog(plcTestDID, []byte(log)); err == nil {
			t.Errorf("%s: no error, document %s", name, doc.appendDocument(nil, plcTestDID))
		} else if errors.Is(err, errTombstoned) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseAuditLog: any input is parsed or refused, never a panic, and whatever parses renders valid JSON.
func FuzzParseAuditLog(f *testing.F) {
	f.Add([]byte("[" + entryJSON(plcOp(`["at://alice.test"]`, fmt.Sprintf(`{"atproto":%q}`, plcTestK256), pdsService("https://pds.example.com")), false, "2023-05-01T00:00:00.000Z") + "]"))
	f.Add([]byte("[" + entryJSON(`{"type":"create","handle":"a","service":"b","signingKey":"c","recoveryKey":"d"}`, false, "2023-05-01T00:00:00.000Z") + "]"))
	f.Add([]byte("[" + entryJSON(plcOp(`["at://\"x"]`, `{"1":"did:key:z1","a\u0000":"q"}`, `{"x":{"type":"\u0001","endpoint":"\\"}}`), false, "2023-05-01T00:00:00.000Z") + "]"))
	f.Add([]byte(`[{"operation":{"type":"plc_tombstone"},"createdAt":"2023-05-01T00:00:00Z"}]`))
	f.Fuzz(func(t *testing.T, log []byte) {
		doc, _, err := parseAuditLog(plcTestDID, log)
		if err != nil {
			return
		}
		out := doc.appendDocument(nil, plcTestDID)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q from %q", out, log)
		}
		doc.handle()
		doc.pdsEndpoint()
		doc.signingKey()
	})
}

// typicalLog is the audit log of a typical account, n distinguishing it from others.
func typicalLog(n int, key string) []byte {
	return fmt.Appendf(nil, `[{"did":"did:plc:2a7ygipkrbh544aqhcav53oy","operation":{"sig":"Dc2hGCNNXwzCUylGNatnYvL2SIUVyTDB_LdXwCDN0-ByIwLuDmhT_PsyITMx3Lw6cLSiJpr4DfRaXcl5wMjqzg","prev":null,"type":"plc_operation","services":{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://elfcup.us-east.host.bsky.network"}},"alsoKnownAs":["at://user%07d.bsky.social"],"rotationKeys":["did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg","did:key:zQ3shpKnbdPx3g3CmPf5cRVTPe1HtSwVn5ish3wSnDPQCbLJK"],"verificationMethods":{"atproto":%q}},"cid":"bafyreifn4pkect7nymne3sxkcg7tn5xcyqlfqrqjtnmagmpvfsmz4nrdgy","nullified":false,"createdAt":"2024-11-20T17:42:45.123Z"}]`, n, key)
}

// plcDocHeap builds n documents of typical accounts and returns the Go heap they hold per account, and the
// part of it that is not the strings' own bytes (handle, key, endpoint).
func plcDocHeap(tb testing.TB, n int) (perAccount, overhead float64) {
	tb.Helper()
	logs := make([][]byte, n)
	for i := range logs {
		logs[i] = typicalLog(i, plcTestK256)
	}
	docs := make([]*plcDoc, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	strBytes := 0
	for i, log := range logs {
		doc, _, err := parseAuditLog("did:plc:2a7ygipkrbh544aqhcav53oy", log)
		if err != nil {
			tb.Fatal(err)
		}
		docs[i] = doc
		strBytes += len("at://") + len(doc.handle()) + len(doc.signingKey()) + len(doc.pdsEndpoint())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(docs)
	runtime.KeepAlive(logs)
	perAccount = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	return perAccount, perAccount - float64(strBytes)/float64(n)
}

// TestPLCDocHeap holds a cached document of a typical account to its budget: 200 bytes beyond its strings.
func TestPLCDocHeap(t *testing.T) {
	per, overhead := plcDocHeap(t, 5000)
	t.Logf("%.0f B/account, %.0f B beyond the strings' bytes", per, overhead)
	if overhead > 200 {
		t.Errorf("a typical account's document costs %.0f bytes of heap beyond its strings, want at most 200", overhead)
	}
}

func BenchmarkPLCDoc(b *testing.B) {
	const did = "did:plc:2a7ygipkrbh544aqhcav53oy"
	log := typicalLog(1, plcTestK256)
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseAuditLog(did, log); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("appendDocument", func(b *testing.B) {
		doc, _, err := parseAuditLog(did, log)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 0, 1024)
		b.ReportAllocs()
		for b.Loop() {
			buf = doc.appendDocument(buf[:0], did)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("heap", func(b *testing.B) {
		var per, overhead float64
		for b.Loop() {
			per, overhead = plcDocHeap(b, 100_000)
		}
		b.ReportMetric(per, "B/account")
		b.ReportMetric(overhead, "B-beyond-strings/account")
	})
}

// TestCachedAccountHeap holds what a cached typical account costs, all told (its document, creation time,
// handle, PDS, the cache entry and its key), to issue 11's budget of 600 bytes: a full-network instance caches
// hundreds of thousands.
func TestCachedAccountHeap(t *testing.T) {
	const n = 20000
	const template = "did:plc:2a7ygipkrbh544aqhcav53oy"
	logs := make([][]byte, n)
	dids := make([]string, n)
	for i := range logs {
		dids[i] = fmt.Sprintf("did:plc:%024d", i)
		logs[i] = bytes.ReplaceAll(typicalLog(i, plcTestK256), []byte(template), []byte(dids[i]))
	}
	e := newEnricher(t, Config{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, log := range logs {
		a, err := plcAccount(dids[i], log)
		if err != nil {
			t.Fatal(err)
		}
		e.accounts.lru.Add(dids[i], &entry[*account]{val: a, res: resOK})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(logs)
	// The DID strings were made before: count them, since the cache keeps them as its keys.
	per := float64(after.HeapAlloc-before.HeapAlloc)/n + float64(len(template)+16)
	t.Logf("%.0f B of heap per cached account", per)
	if per > 600 {
		t.Errorf("a cached account costs %.0f B, want at most 600", per)
	}
}
