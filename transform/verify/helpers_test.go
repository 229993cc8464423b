package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/atkafka/atkafka/testenv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	"github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"

	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/enrich"
)

// cborPrefix makes the CIDs of DAG-CBOR blocks, as atproto repositories do.
var cborPrefix = cid.NewPrefixV1(cid.DagCBOR, 0x12)

// account is a repository whose commits are built and signed the way a PDS does (Sync 1.1): every commit
// carries its MST diff, its records and prevData.
type account struct {
	t     testing.TB
	did   string
	key   *atcrypto.PrivateKeyK256
	tree  mst.Tree
	clock *syntax.TIDClock
	rev   string
	seq   int64
	n     int
}

func newAccount(t testing.TB, did string, records int) *account {
	t.Helper()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	a := &account{t: t, did: did, key: key, tree: mst.NewEmptyTree(), clock: syntax.NewTIDClock(0), seq: 1000}
	// Earlier history, never sent: the tree the commits start from.
	for range records {
		if _, err := repo.ApplyOp(&a.tree, a.nextPath(), a.record("old").cid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.tree.RootCID(); err != nil { // marks the tree clean: the next diff holds only new nodes
		t.Fatal(err)
	}
	a.rev = a.clock.Next().String()
	return a
}

func (a *account) nextPath() string {
	a.n++
	return fmt.Sprintf("app.bsky.feed.post/3l%011d", a.n)
}

type record struct {
	cid  *cid.Cid
	data []byte
}

func (a *account) record(text string) record {
	data, err := atdata.MarshalCBOR(map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-07-04T10:00:00.000Z"})
	if err != nil {
		a.t.Fatal(err)
	}
	c, err := cborPrefix.Sum(data)
	if err != nil {
		a.t.Fatal(err)
	}
	return record{&c, data}
}

// change is one op of a commit to build: a create when path is "", an update when text is set, a delete
// otherwise.
type change struct {
	path, text string
}

// commit applies the changes, signs a commit with signer (the account's key when nil) and returns the #commit
// message, the way a PDS emits it.
func (a *account) commit(signer atcrypto.PrivateKey, changes ...change) *comatproto.SyncSubscribeRepos_Commit {
	t := a.t
	t.Helper()
	ctx := context.Background()
	prevData, err := a.tree.RootCID()
	if err != nil {
		t.Fatal(err)
	}
	var recs []record
	msg := &comatproto.SyncSubscribeRepos_Commit{Repo: a.did, Blobs: []lexutil.LexLink{}}
	for _, ch := range changes {
		path, action := ch.path, "delete"
		var val *cid.Cid
		if path == "" || ch.text != "" {
			action = "update"
			if path == "" {
				path, action = a.nextPath(), "create"
			}
			r := a.record(ch.text)
			recs, val = append(recs, r), r.cid
		}
		op, err := repo.ApplyOp(&a.tree, path, val)
		if err != nil {
			t.Fatal(err)
		}
		msg.Ops = append(msg.Ops, &comatproto.SyncSubscribeRepos_RepoOp{Action: action, Path: path,
			Cid: (*lexutil.LexLink)(op.Value), Prev: (*lexutil.LexLink)(op.Prev)})
	}
	//lint:ignore SA1019 mst.Tree.WriteDiffBlocks takes this package's Blockstore interface
	diff := blockstore.NewBlockstore(datastore.NewMapDatastore())
	root, err := a.tree.WriteDiffBlocks(ctx, diff)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.tree.RootCID(); err != nil {
		t.Fatal(err)
	}
	since := a.rev
	a.rev = a.clock.Next().String()
	c := repo.Commit{DID: a.did, Version: 3, Data: *root, Rev: a.rev}
	if signer == nil {
		signer = a.key
	}
	if err := c.Sign(signer); err != nil {
		t.Fatal(err)
	}
	var cb bytes.Buffer
	if err := c.MarshalCBOR(&cb); err != nil {
		t.Fatal(err)
	}
	commitCID, err := cborPrefix.Sum(cb.Bytes())
	if err != nil {
		t.Fatal(err)
	}

	var carBuf bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{commitCID}, Version: 1}, &carBuf); err != nil {
		t.Fatal(err)
	}
	write := func(c cid.Cid, data []byte) {
		if err := carutil.LdWrite(&carBuf, c.Bytes(), data); err != nil {
			t.Fatal(err)
		}
	}
	write(commitCID, cb.Bytes())
	keys, err := diff.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		b, err := diff.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		// The blockstore keys blocks by multihash and lists them as raw CIDs: MST nodes are DAG-CBOR.
		write(cid.NewCidV1(cid.DagCBOR, k.Hash()), b.RawData())
	}
	for _, r := range recs {
		write(*r.cid, r.data)
	}

	a.seq++
	msg.Rev, msg.Since, msg.Seq = a.rev, &since, a.seq
	msg.Commit, msg.Blocks, msg.PrevData = lexutil.LexLink(commitCID), carBuf.Bytes(), (*lexutil.LexLink)(prevData)
	msg.Time = syntax.DatetimeNow().String()
	if _, err := repo.VerifyCommitMessage(ctx, msg); err != nil && signer == a.key {
		t.Fatalf("indigo rejects the commit built: %v", err)
	}
	return msg
}

// sync returns the #sync message of the account's current state, signed by signer (the account's key when
// nil).
func (a *account) sync(signer atcrypto.PrivateKey) *comatproto.SyncSubscribeRepos_Sync {
	t := a.t
	root, err := a.tree.RootCID()
	if err != nil {
		t.Fatal(err)
	}
	a.rev = a.clock.Next().String()
	c := repo.Commit{DID: a.did, Version: 3, Data: *root, Rev: a.rev}
	if signer == nil {
		signer = a.key
	}
	if err := c.Sign(signer); err != nil {
		t.Fatal(err)
	}
	var cb, carBuf bytes.Buffer
	if err := c.MarshalCBOR(&cb); err != nil {
		t.Fatal(err)
	}
	commitCID, _ := cborPrefix.Sum(cb.Bytes())
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{commitCID}, Version: 1}, &carBuf); err != nil {
		t.Fatal(err)
	}
	if err := carutil.LdWrite(&carBuf, commitCID.Bytes(), cb.Bytes()); err != nil {
		t.Fatal(err)
	}
	a.seq++
	return &comatproto.SyncSubscribeRepos_Sync{Did: a.did, Rev: a.rev, Seq: a.seq, Blocks: carBuf.Bytes(),
		Time: syntax.DatetimeNow().String()}
}

// body encodes a message as a frame body.
func body(t testing.TB, msg interface{ MarshalCBOR(io.Writer) error }) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := msg.MarshalCBOR(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// frameBody returns the body of a websocket message (header, then body).
func frameBody(t testing.TB, msg []byte) []byte {
	t.Helper()
	d := dagcbor.NewDecoder(msg)
	if err := d.Skip(); err != nil {
		t.Fatal(err)
	}
	return d.Remaining()
}

// didDoc is the DID document PLC serves for a did:plc with the given signing key.
func didDoc(did string, key atcrypto.PublicKey) json.RawMessage {
	doc, _ := json.Marshal(map[string]any{
		"@context":    []string{"https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"},
		"id":          did,
		"alsoKnownAs": []string{"at://someone.test"},
		"verificationMethod": []map[string]string{{"id": did + "#atproto", "type": "Multikey", "controller": did,
			"publicKeyMultibase": key.Multibase()}},
		"service": []map[string]string{{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.test"}},
	})
	return doc
}

// fakePLC serves DID documents; documents can be changed (key rotation) and the server taken down.
type fakePLC struct {
	*httptest.Server
	mu       sync.Mutex
	docs     map[string]json.RawMessage
	down     bool
	requests int
}

func newPLC(t testing.TB, docs map[string]json.RawMessage) *fakePLC {
	p := &fakePLC{docs: docs}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.requests++
		if p.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		// The verifier's own directory reads documents; enrichment's cache reads audit logs (one request per
		// account for both).
		did, audit := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		doc, ok := p.docs[did]
		switch {
		case !ok:
			http.NotFound(w, r)
		case audit:
			w.Write(testenv.PLCAuditLog(did, doc, "2023-04-01T00:00:00.000Z"))
		default:
			w.Write(doc)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakePLC) set(did string, doc json.RawMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.docs[did] = doc
}

func (p *fakePLC) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

func newVerifier(t testing.TB, mode Mode, plc string) *Verifier {
	t.Helper()
	v, err := New(Config{Mode: mode, Keys: newEnricher(t, plc), Logger: slog.New(slog.DiscardHandler), Observer: &tally{}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newEnricher returns the Enricher that resolves keys on plc, as atkafka wires it; failures are remembered for a
// millisecond only, so that a test can bring the PLC back.
func newEnricher(t testing.TB, plc string) *enrich.Enricher {
	t.Helper()
	e, err := enrich.New(enrich.Config{PLCHost: plc, PLCRate: -1, FailureTTL: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// tally is an Observer of the test's own, so that a test counts its own verifier's frames.
type tally struct{ testenv.Counts }

func (c *tally) Verified(kind, result string) { c.Add(kind+" "+result, 1) }
func (c *tally) Failed(reason string)         { c.Add("failed "+reason, 1) }

// counted returns how many frames v counted under key ("commit ok", "failed bad_signature").
func counted(v *Verifier, key string) int { return v.obs.(*tally).Get(key) }
