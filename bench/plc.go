package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/atkafka/atkafka/source/relay/relaytest"
	"github.com/atkafka/atkafka/testenv"
)

// benchCreatedAt is every fake account's creation time: the corpus has no audit logs.
const benchCreatedAt = "2023-04-01T12:00:00.000Z"

// FakePLC serves, after plcLatency, what plc.directory serves for the corpus accounts and for every DID that
// relaytest.LoopDID makes of them (GET /{did}, and GET /{did}/log/audit with one operation derived from the
// document), and, after apiLatency, the AppView's app.bsky.actor.getProfiles for the same accounts.
func FakePLC(docs map[string]json.RawMessage, plcLatency, apiLatency time.Duration) http.Handler {
	type known struct {
		did        string
		doc, audit []byte
	}
	byKey := make(map[string]known, len(docs))
	for did, doc := range docs {
		byKey[relaytest.OriginalKey(did)] = known{did: did, doc: doc, audit: testenv.PLCAuditLog(did, doc, benchCreatedAt)}
	}
	// lookup returns what is served for did: the original account's, with its DID replaced.
	lookup := func(did string) (known, bool) {
		k, ok := byKey[relaytest.OriginalKey(did)]
		if !ok || len(did) != len(k.did) || !strings.HasPrefix(did, "did:plc:") {
			return known{}, false
		}
		if did != k.did {
			k.doc = bytes.ReplaceAll(k.doc, []byte(k.did), []byte(did))
			k.audit = bytes.ReplaceAll(k.audit, []byte(k.did), []byte(did))
		}
		return k, true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/xrpc/app.bsky.actor.getProfiles" {
			time.Sleep(apiLatency)
			var out []byte
			out = append(out, `{"profiles":[`...)
			n := 0
			for _, actor := range r.URL.Query()["actors"] {
				if _, ok := lookup(actor); ok {
					if n > 0 {
						out = append(out, ',')
					}
					n++
					out = append(out, `{"did":"`+actor+`","handle":"bench.test","displayName":"Bench","followersCount":10,"followsCount":20,"postsCount":30}`...)
				}
			}
			w.Write(append(out, "]}"...))
			return
		}
		time.Sleep(plcLatency)
		did, audit := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		k, ok := lookup(did)
		switch {
		case !ok:
			http.NotFound(w, r)
		case audit:
			w.Write(k.audit)
		default:
			w.Write(k.doc)
		}
	})
}
