package testenv

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/multiformats/go-multibase"
)

// PLCDocument is a did:plc document as the PLC serves it, decoded with its arrays' order.
type PLCDocument struct {
	Context            []string `json:"@context"`
	ID                 string   `json:"id"`
	AlsoKnownAs        []string `json:"alsoKnownAs"`
	VerificationMethod []struct {
		ID                 string `json:"id"`
		Type               string `json:"type"`
		Controller         string `json:"controller"`
		PublicKeyMultibase string `json:"publicKeyMultibase"`
	} `json:"verificationMethod"`
	Service []struct {
		ID              string `json:"id"`
		Type            string `json:"type"`
		ServiceEndpoint string `json:"serviceEndpoint"`
	} `json:"service"`
}

// PLCAuditLog is the one-entry audit log (GET /{did}/log/audit) of a PLC whose only operation, created at
// createdAt, produced doc: its verification methods, alsoKnownAs and services in the document's order. Fake
// PLCs serve it for documents they hold (the corpus has documents, not audit logs).
func PLCAuditLog(did string, doc []byte, createdAt string) []byte {
	var d PLCDocument
	_ = json.Unmarshal(doc, &d)
	var b bytes.Buffer
	str := func(s string) { v, _ := json.Marshal(s); b.Write(v) }
	b.WriteString(`[{"did":`)
	str(did)
	b.WriteString(`,"operation":{"type":"plc_operation","rotationKeys":[],"verificationMethods":{`)
	for i, vm := range d.VerificationMethod {
		if i > 0 {
			b.WriteByte(',')
		}
		_, frag, _ := strings.Cut(vm.ID, "#")
		str(frag)
		b.WriteByte(':')
		str("did:key:" + vm.PublicKeyMultibase)
	}
	b.WriteString(`},"alsoKnownAs":`)
	aka, _ := json.Marshal(d.AlsoKnownAs)
	b.Write(aka)
	b.WriteString(`,"services":{`)
	for i, s := range d.Service {
		if i > 0 {
			b.WriteByte(',')
		}
		_, frag, _ := strings.Cut(s.ID, "#")
		str(frag)
		b.WriteString(`:{"type":`)
		str(s.Type)
		b.WriteString(`,"endpoint":`)
		str(s.ServiceEndpoint)
		b.WriteByte('}')
	}
	b.WriteString(`},"prev":null,"sig":"bench"},"cid":"bafyreibench","nullified":false,"createdAt":`)
	str(createdAt)
	b.WriteString(`}]`)
	return b.Bytes()
}

// CurrentPLCFormat rewrites a document dev-env's PLC served into the format plc.directory serves today. dev-env
// pins @did-plc/lib 0.0.1, whose formatDidDoc predates Multikey: verification method ids are "#atproto",
// types name the curve, publicKeyMultibase is the uncompressed key without a multicodec prefix, and @context
// lacks the multikey context. Everything else (values, order, the key-type contexts) is as today.
func CurrentPLCFormat(t testing.TB, did string, served []byte) []byte {
	t.Helper()
	var doc PLCDocument
	if err := json.Unmarshal(served, &doc); err != nil {
		t.Fatalf("%s: %v: %s", did, err, served)
	}
	if len(doc.Context) == 0 || doc.Context[0] != "https://www.w3.org/ns/did/v1" {
		t.Fatalf("%s: @context %q", did, doc.Context)
	}
	doc.Context = append([]string{doc.Context[0], "https://w3id.org/security/multikey/v1"}, doc.Context[1:]...)
	for i := range doc.VerificationMethod {
		vm := &doc.VerificationMethod[i]
		_, raw, err := multibase.Decode(vm.PublicKeyMultibase)
		if err != nil {
			t.Fatalf("%s: %s: %v", did, vm.PublicKeyMultibase, err)
		}
		var key atcrypto.PublicKey
		switch vm.Type {
		case "EcdsaSecp256k1VerificationKey2019":
			key, err = atcrypto.ParsePublicUncompressedBytesK256(raw)
		case "EcdsaSecp256r1VerificationKey2019":
			key, err = atcrypto.ParsePublicUncompressedBytesP256(raw)
		default:
			t.Fatalf("%s: verification method type %q", did, vm.Type)
		}
		if err != nil {
			t.Fatalf("%s: %v", did, err)
		}
		if !strings.HasPrefix(vm.ID, "#") {
			t.Fatalf("%s: verification method id %q", did, vm.ID)
		}
		vm.ID, vm.Type, vm.PublicKeyMultibase = did+vm.ID, "Multikey", key.Multibase()
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
