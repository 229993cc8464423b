package testenv

import (
	"bytes"
	"encoding/json"
	"strings"
)

// PLCAuditLog is the one-entry audit log (GET /{did}/log/audit) of a PLC whose only operation, created at
// createdAt, produced doc: its verification methods, alsoKnownAs and services in the document's order. Fake
// PLCs serve it for documents they hold (the corpus has documents, not audit logs).
func PLCAuditLog(did string, doc []byte, createdAt string) []byte {
	var d struct {
		AlsoKnownAs        []string `json:"alsoKnownAs"`
		VerificationMethod []struct {
			ID                 string `json:"id"`
			PublicKeyMultibase string `json:"publicKeyMultibase"`
		} `json:"verificationMethod"`
		Service []struct {
			ID              string `json:"id"`
			Type            string `json:"type"`
			ServiceEndpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
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
