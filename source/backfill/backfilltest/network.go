// Package backfilltest is a synthetic network for backfill tests and benchmarks: repositories built and signed
// the way a PDS builds them, served by one HTTP handler acting as relay (listRepos), PDS (getRepo) and PLC
// (DID documents and audit logs).
package backfilltest

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	"github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"

	"github.com/atkafka/atkafka/testenv"
)

// cborPrefix makes the CIDs of DAG-CBOR blocks, as atproto repositories do.
var cborPrefix = cid.NewPrefixV1(cid.DagCBOR, 0x12)

// Record is one record of a generated repository.
type Record struct {
	Collection, Rkey string
	CID              string
	// JSON is the record as atproto JSON, what a backfill must produce for it.
	JSON []byte
}

// Repo is one generated account.
type Repo struct {
	DID, Rev string
	CAR      []byte
	Records  []Record
	// Status, when set, makes getRepo answer as a PDS does for an inactive account (takendown, deactivated),
	// and listRepos list it inactive.
	Status string
	doc    []byte
}

// Network is a set of generated repositories. Set PDS before serving: it is the endpoint DID documents name.
type Network struct {
	Repos []*Repo
	byDID map[string]*Repo
	// PDS is the URL the DID documents name as every account's PDS (the handler's own URL).
	PDS string
	// GetRepos counts getRepo requests; Fail, when set, answers a getRepo instead (status code, 0: serve).
	GetRepos atomic.Int64
	Fail     func(did string, attempt int64) int
	// Latency and Bandwidth make getRepo answer like a PDS across the internet: each answer starts after a
	// latency drawn between half and twice Latency, and its body comes at Bandwidth bytes/s at most (0: at once).
	Latency   time.Duration
	Bandwidth int
}

// Sizes is the number of records of n repositories shaped like the network: most repositories small, a long
// tail of large ones (Pareto, alpha 0.7 from 4 records, capped at maxRecords: median ~10, p90 ~100, p99 ~3,000,
// mean ~230 with a 50,000 cap; the network's mean is ~440 with repositories of millions).
func Sizes(n, maxRecords int, seed uint64) []int {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]int, n)
	for i := range out {
		x := 4 / math.Pow(1-r.Float64(), 1/0.7)
		out[i] = min(int(x), maxRecords)
	}
	return out
}

// Generate builds len(sizes) repositories, repository i with sizes[i] records of a few collections.
func Generate(sizes []int) (*Network, error) {
	n := &Network{byDID: map[string]*Repo{}}
	for i, size := range sizes {
		r, err := build(i, size)
		if err != nil {
			return nil, err
		}
		n.Repos = append(n.Repos, r)
		n.byDID[r.DID] = r
	}
	return n, nil
}

// DID is the i-th generated account's DID.
func DID(i int) string {
	var b [15]byte
	binary.BigEndian.PutUint64(b[7:], uint64(i))
	copy(b[:7], "atkafka")
	return "did:plc:" + base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").EncodeToString(b[:])
}

var collections = []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow", "app.bsky.feed.repost"}

func build(i, size int) (*Repo, error) {
	ctx := context.Background()
	did := DID(i)
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	clock := syntax.NewTIDClock(uint(i % 1024))
	tree := mst.NewEmptyTree()
	r := &Repo{DID: did}
	blocks := map[cid.Cid][]byte{}
	for j := range size {
		coll := collections[j%len(collections)]
		rec := map[string]any{"$type": coll, "createdAt": "2025-03-04T05:06:07.000Z"}
		switch coll {
		case "app.bsky.feed.post":
			rec["text"] = fmt.Sprintf("post %d of account %d, with some text to make it the size of a real post", j, i)
			rec["langs"] = []any{"en"}
		default:
			rec["subject"] = map[string]any{"uri": "at://" + DID(j) + "/app.bsky.feed.post/3kabcdefghijk", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
		}
		data, err := atdata.MarshalCBOR(rec)
		if err != nil {
			return nil, err
		}
		c, err := cborPrefix.Sum(data)
		if err != nil {
			return nil, err
		}
		rkey := clock.Next().String()
		if _, err := tree.Insert([]byte(coll+"/"+rkey), c); err != nil {
			return nil, err
		}
		blocks[c] = data
		js, err := atdata.UnmarshalCBOR(data)
		if err != nil {
			return nil, err
		}
		out, err := json.Marshal(js)
		if err != nil {
			return nil, err
		}
		r.Records = append(r.Records, Record{Collection: coll, Rkey: rkey, CID: c.String(), JSON: out})
	}
	//lint:ignore SA1019 mst.Tree.WriteDiffBlocks takes this package's Blockstore interface
	bs := blockstore.NewBlockstore(datastore.NewMapDatastore())
	root, err := tree.WriteDiffBlocks(ctx, bs)
	if err != nil {
		return nil, err
	}
	r.Rev = clock.Next().String()
	commit := repo.Commit{DID: did, Version: 3, Data: *root, Rev: r.Rev}
	if err := commit.Sign(key); err != nil {
		return nil, err
	}
	var cb bytes.Buffer
	if err := commit.MarshalCBOR(&cb); err != nil {
		return nil, err
	}
	commitCID, err := cborPrefix.Sum(cb.Bytes())
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{commitCID}, Version: 1}, &out); err != nil {
		return nil, err
	}
	write := func(c cid.Cid, data []byte) error { return carutil.LdWrite(&out, c.Bytes(), data) }
	if err := write(commitCID, cb.Bytes()); err != nil {
		return nil, err
	}
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		return nil, err
	}
	for k := range keys {
		b, err := bs.Get(ctx, cid.NewCidV1(cid.DagCBOR, k.Hash()))
		if err != nil {
			return nil, err
		}
		if err := write(cid.NewCidV1(cid.DagCBOR, k.Hash()), b.RawData()); err != nil {
			return nil, err
		}
	}
	for c, data := range blocks {
		if err := write(c, data); err != nil {
			return nil, err
		}
	}
	r.CAR = out.Bytes()
	r.doc = []byte(`{"@context":["https://www.w3.org/ns/did/v1"],"id":"` + did + `","alsoKnownAs":["at://u` + strconv.Itoa(i) +
		`.test"],"verificationMethod":[{"id":"` + did + `#atproto","type":"Multikey","controller":"` + did +
		`","publicKeyMultibase":"` + pub.Multibase() + `"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"PDS"}]}`)
	return r, nil
}

// ServeHTTP answers as relay, PDS and PLC at once.
func (n *Network) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	switch req.URL.Path {
	case "/xrpc/com.atproto.sync.listRepos":
		n.listRepos(w, q.Get("cursor"), q.Get("limit"))
	case "/xrpc/com.atproto.sync.getRepo":
		attempt := n.GetRepos.Add(1)
		r := n.byDID[q.Get("did")]
		fail := 0
		if r != nil && n.Fail != nil {
			fail = n.Fail(r.DID, attempt)
		}
		switch {
		case r == nil:
			xrpcError(w, http.StatusBadRequest, "RepoNotFound")
		case fail != 0:
			w.WriteHeader(fail)
		case r.Status == "takendown":
			xrpcError(w, http.StatusBadRequest, "RepoTakendown")
		case r.Status == "deactivated":
			xrpcError(w, http.StatusBadRequest, "RepoDeactivated")
		default:
			w.Header().Set("Content-Type", "application/vnd.ipld.car")
			n.slowly(req.Context(), w, r.CAR)
		}
	default:
		did, audit := strings.CutSuffix(strings.TrimPrefix(req.URL.Path, "/"), "/log/audit")
		r := n.byDID[did]
		if r == nil {
			http.NotFound(w, req)
			return
		}
		doc := bytes.Replace(r.doc, []byte(`"serviceEndpoint":"PDS"`), []byte(`"serviceEndpoint":"`+n.PDS+`"`), 1)
		w.Header().Set("Content-Type", "application/json")
		if audit {
			w.Write(testenv.PLCAuditLog(did, doc, "2024-01-01T00:00:00.000Z"))
			return
		}
		w.Write(doc)
	}
}

// slowly writes b after the network's latency, at its bandwidth.
func (n *Network) slowly(ctx context.Context, w http.ResponseWriter, b []byte) {
	if n.Latency > 0 {
		d := n.Latency/2 + time.Duration(rand.Int64N(int64(n.Latency)*3/2+1))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
	}
	if n.Bandwidth <= 0 {
		w.Write(b)
		return
	}
	const chunk = 64 << 10
	start := time.Now()
	for sent := 0; sent < len(b); {
		end := min(sent+chunk, len(b))
		if _, err := w.Write(b[sent:end]); err != nil {
			return
		}
		sent = end
		time.Sleep(time.Until(start.Add(time.Duration(float64(sent) / float64(n.Bandwidth) * float64(time.Second)))))
	}
}

func xrpcError(w http.ResponseWriter, code int, name string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":%q,"message":"%s"}`, name, name)
}

func (n *Network) listRepos(w http.ResponseWriter, cursor, limit string) {
	start, _ := strconv.Atoi(cursor)
	start = min(max(start, 0), len(n.Repos))
	size, err := strconv.Atoi(limit)
	if err != nil || size <= 0 {
		size = 500
	}
	end := min(start+size, len(n.Repos))
	type item struct {
		DID    string `json:"did"`
		Head   string `json:"head"`
		Rev    string `json:"rev"`
		Active bool   `json:"active"`
		Status string `json:"status,omitempty"`
	}
	out := struct {
		Cursor string `json:"cursor,omitempty"`
		Repos  []item `json:"repos"`
	}{Repos: []item{}}
	for _, r := range n.Repos[start:end] {
		out.Repos = append(out.Repos, item{DID: r.DID, Rev: r.Rev, Head: "", Active: r.Status == "", Status: r.Status})
	}
	if end < len(n.Repos) {
		out.Cursor = strconv.Itoa(end)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
