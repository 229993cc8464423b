package enrich

import (
	"context"
	"testing"
)

// warmEnricher returns an Enricher whose caches hold a realistic document, audit entry and profile for did.
func warmEnricher(b *testing.B) (*Enricher, string) {
	plc := newFakePLC(b)
	did := "did:plc:2a7ygipkrbh544aqhcav53oy"
	plc.set(plc.docs, did, `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1","https://w3id.org/security/suites/secp256k1-2019/v1"],"id":"did:plc:2a7ygipkrbh544aqhcav53oy","alsoKnownAs":["at://t045t.zmb.cm"],"verificationMethod":[{"id":"did:plc:2a7ygipkrbh544aqhcav53oy#atproto","type":"Multikey","controller":"did:plc:2a7ygipkrbh544aqhcav53oy","publicKeyMultibase":"zQ3shrc8v5X6ZiANcZxA6JerfT2T4SskeCGxpmtDfMuHF9KRj"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://elfcup.us-east.host.bsky.network"}]}`)
	plc.set(plc.created, did, "2023-04-12T04:53:57.057Z")
	plc.set(plc.profiles, did, `{"did":"did:plc:2a7ygipkrbh544aqhcav53oy","handle":"t045t.zmb.cm","displayName":"T","followersCount":10,"followsCount":20,"postsCount":30,"createdAt":"2023-04-12T04:53:57.057Z"}`)
	e := newEnricher(b, Config{PLCHost: plc.URL, APIHost: plc.URL})
	if m := e.Metadata(context.Background(), did); m.Handle() == "" || m.AccountAge() < 0 {
		b.Fatal("warm-up failed")
	}
	return e, did
}

func BenchmarkMetadataAppendJSON(b *testing.B) {
	e, did := warmEnricher(b)
	ctx := context.Background()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.Metadata(ctx, did).AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkMetadataAppendJSONParallel(b *testing.B) {
	e, did := warmEnricher(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		buf := make([]byte, 0, 4096)
		for pb.Next() {
			buf = e.Metadata(ctx, did).AppendJSON(buf[:0])
		}
	})
}
