package enrich

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/atkafka/atkafka/testenv"
)

// TestPLCDocDevEnv reads audit logs the reference PLC (dev-env's @did-plc/server) wrote and checks each
// rendering against the document the same PLC serves: accounts a PDS created (one with a handle change), and
// a DID this test writes itself, with keys and services in an unusual order, a nullified operation (a
// rotation key overriding a weaker one), then a tombstone.
func TestPLCDocDevEnv(t *testing.T) {
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{})
	plc := &plcTestClient{t: t, url: env.PLCURL, client: &http.Client{Timeout: 30 * time.Second}}

	alice := env.CreateAccount(env.PDS[0], "alice")
	bob := env.CreateAccount(env.PDS[0], "bob")
	env.UpdateHandle(bob, "bobby")
	for _, acct := range []*testenv.Account{alice, bob} {
		doc := plc.check(acct.DID)
		if doc.handle() != acct.Handle || doc.pdsEndpoint() != env.PDS[0].PublicURL {
			t.Errorf("%s: handle %q pds %q, want %q %q", acct.DID, doc.handle(), doc.pdsEndpoint(), acct.Handle, env.PDS[0].PublicURL)
		}
	}
	if n := len(plc.auditLog(bob.DID)); n != 2 {
		t.Errorf("bob's audit log has %d entries, want 2 (creation, handle change)", n)
	}

	// A DID of our own, so that the operations can hold what a PDS never writes.
	strong, weak := newTestKey(t, atcrypto.GeneratePrivateKeyK256), newTestKey(t, atcrypto.GeneratePrivateKeyK256)
	p1, p2 := newTestKey(t, atcrypto.GeneratePrivateKeyP256), newTestKey(t, atcrypto.GeneratePrivateKeyP256)
	k1 := newTestKey(t, atcrypto.GeneratePrivateKeyK256)
	genesis := testPLCOp{
		rotationKeys: []string{strong.didKey, weak.didKey},
		// JSON.parse on the PLC enumerates "2" and "10" first: the served order is 2, 10, zeta, atproto.
		verificationMethods: [][2]string{{"zeta", p1.didKey}, {"atproto", k1.didKey}, {"10", k1.didKey}, {"2", p2.didKey}},
		alsoKnownAs:         []string{"at://custom.test"},
		services: [][3]string{
			{"atproto_labeler", "AtprotoLabeler", "https://mod.custom.test"},
			{"atproto_pds", "AtprotoPersonalDataServer", "https://pds.custom.test"},
			{"b", "Other", "https://b.custom.test/path"},
		},
	}
	did, genesisCID := plc.send("", genesis.sign(t, strong, ""))
	doc := plc.check(did)
	if doc.handle() != "custom.test" || doc.pdsEndpoint() != "https://pds.custom.test" || doc.signingKey() != strings.TrimPrefix(k1.didKey, "did:key:") {
		t.Errorf("%s: handle %q pds %q key %q", did, doc.handle(), doc.pdsEndpoint(), doc.signingKey())
	}

	hijack := genesis
	hijack.alsoKnownAs = []string{"at://mallory.test"}
	plc.send(did, hijack.sign(t, weak, genesisCID))
	if doc := plc.check(did); doc.handle() != "mallory.test" {
		t.Errorf("%s: handle %q before the recovery", did, doc.handle())
	}
	recovery := genesis
	recovery.alsoKnownAs = []string{"https://custom.example", "at://Custom2.test"}
	recovery.services = genesis.services[1:2]
	_, recoveryCID := plc.send(did, recovery.sign(t, strong, genesisCID))
	log := plc.auditLog(did)
	if len(log) != 3 || !log[1].Nullified || log[2].Nullified {
		t.Errorf("%s: audit log %+v, want the second of three entries nullified", did, log)
	}
	if doc := plc.check(did); doc.handle() != "custom2.test" {
		t.Errorf("%s: handle %q after the recovery", did, doc.handle())
	}

	tombstone := testSign(t, strong, map[string]any{"type": "plc_tombstone", "prev": recoveryCID},
		fmt.Appendf(nil, `{"type":"plc_tombstone","prev":%q`, recoveryCID))
	plc.send(did, tombstone)
	if _, _, err := parseAuditLog(did, plc.get("/"+did+"/log/audit", http.StatusOK)); !errors.Is(err, errTombstoned) {
		t.Errorf("%s: tombstoned DID: %v, want errTombstoned", did, err)
	}
	plc.get("/"+did, http.StatusNotFound)
}

type plcTestClient struct {
	t      *testing.T
	url    string
	client *http.Client
}

func (c *plcTestClient) get(path string, status int) []byte {
	c.t.Helper()
	resp, err := c.client.Get(c.url + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != status {
		c.t.Fatalf("GET %s: HTTP %d, want %d: %s (%v)", path, resp.StatusCode, status, body, err)
	}
	return body
}

func (c *plcTestClient) auditLog(did string) []struct{ Nullified bool } {
	c.t.Helper()
	var log []struct{ Nullified bool }
	if err := json.Unmarshal(c.get("/"+did+"/log/audit", http.StatusOK), &log); err != nil {
		c.t.Fatal(err)
	}
	return log
}

// check parses did's audit log and compares the rendering with the document the PLC serves.
func (c *plcTestClient) check(did string) *plcDoc {
	c.t.Helper()
	log := c.get("/"+did+"/log/audit", http.StatusOK)
	doc, createdAt, err := parseAuditLog(did, log)
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", did, err, log)
	}
	if _, err := time.Parse(time.RFC3339, createdAt); err != nil || !bytes.Contains(log, []byte(`"createdAt":"`+createdAt+`"`)) {
		c.t.Errorf("%s: createdAt %q (%v)", did, createdAt, err)
	}
	served := c.get("/"+did, http.StatusOK)
	checkDocument(c.t, did, doc.appendDocument(nil, did), testenv.CurrentPLCFormat(c.t, did, served))
	return doc
}

// send posts a signed operation to the PLC; did "" means a genesis, whose DID the operation determines. It
// returns the DID and the operation's CID (the next operation's prev).
func (c *plcTestClient) send(did string, op signedOp) (string, string) {
	c.t.Helper()
	sum := sha256.Sum256(op.cbor)
	if did == "" {
		did = "did:plc:" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:24]
	}
	resp, err := c.client.Post(c.url+"/"+did, "application/json", bytes.NewReader(op.json))
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST %s: HTTP %d: %s\n%s", did, resp.StatusCode, body, op.json)
	}
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		c.t.Fatal(err)
	}
	return did, cid.NewCidV1(cid.DagCBOR, mh).String()
}

type testKey struct {
	priv   atcrypto.PrivateKey
	didKey string
}

func newTestKey[K atcrypto.PrivateKey](t testing.TB, gen func() (K, error)) testKey {
	t.Helper()
	k, err := gen()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return testKey{k, pub.DIDKey()}
}

// testPLCOp is a plc_operation whose JSON keeps the object keys in the order given.
type testPLCOp struct {
	rotationKeys        []string
	verificationMethods [][2]string // id, did:key
	alsoKnownAs         []string
	services            [][3]string // id, type, endpoint
}

type signedOp struct{ cbor, json []byte }

// sign signs op with key: DAG-CBOR for the signature (whose canonical key order is not ours), JSON with our
// order for the PLC.
func (op testPLCOp) sign(t testing.TB, key testKey, prev string) signedOp {
	t.Helper()
	strs := func(ss []string) []any {
		out := make([]any, len(ss))
		for i, s := range ss {
			out[i] = s
		}
		return out
	}
	vms, svc := map[string]any{}, map[string]any{}
	var js bytes.Buffer
	js.WriteString(`{"type":"plc_operation","rotationKeys":`)
	js.WriteString(jsonText(t, op.rotationKeys))
	js.WriteString(`,"verificationMethods":{`)
	for i, vm := range op.verificationMethods {
		vms[vm[0]] = vm[1]
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, "%s:%s", jsonText(t, vm[0]), jsonText(t, vm[1]))
	}
	js.WriteString(`},"alsoKnownAs":`)
	js.WriteString(jsonText(t, op.alsoKnownAs))
	js.WriteString(`,"services":{`)
	for i, s := range op.services {
		svc[s[0]] = map[string]any{"type": s[1], "endpoint": s[2]}
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, `%s:{"type":%s,"endpoint":%s}`, jsonText(t, s[0]), jsonText(t, s[1]), jsonText(t, s[2]))
	}
	js.WriteString(`},"prev":`)
	var prevVal any
	if prev == "" {
		js.WriteString("null")
	} else {
		js.WriteString(jsonText(t, prev))
		prevVal = prev
	}
	return testSign(t, key, map[string]any{
		"type": "plc_operation", "rotationKeys": strs(op.rotationKeys), "verificationMethods": vms,
		"alsoKnownAs": strs(op.alsoKnownAs), "services": svc, "prev": prevVal,
	}, js.Bytes())
}

// testSign signs the operation unsigned (as data for DAG-CBOR) and completes its JSON, jsonPrefix (the same
// operation without the closing brace), with the signature.
func testSign(t testing.TB, key testKey, unsigned map[string]any, jsonPrefix []byte) signedOp {
	t.Helper()
	data, err := atdata.MarshalCBOR(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := key.priv.HashAndSign(data)
	if err != nil {
		t.Fatal(err)
	}
	unsigned["sig"] = base64.RawURLEncoding.EncodeToString(sig)
	signed, err := atdata.MarshalCBOR(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	return signedOp{cbor: signed, json: fmt.Appendf(jsonPrefix, `,"sig":%q}`, unsigned["sig"])}
}
