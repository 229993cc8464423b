package ozone

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"
)

// ozoneNet is what the end-to-end tests use of the reference network: a PDS holding a moderator account, the
// Ozone it proxies to, and a way to stop and start Ozone.
type ozoneNet struct {
	PDSURL, LabelerDID, Identifier, Password, ModeratorDID string

	ozoneURL, adminPassword, controlURL string
}

// startOzoneNet returns the network: TEMPORARY probe until testenv.StartDevEnv lands.
func startOzoneNet(t *testing.T) *ozoneNet {
	t.Helper()
	path := os.Getenv("ATKAFKA_OZONE_PROBE")
	if path == "" {
		t.Skip("no dev-env")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Ozone     struct{ URL, DID string }
		Moderator struct {
			Identifier, Password, DID string
			PdsURL                    string `json:"pdsUrl"`
		}
		AdminPassword string `json:"adminPassword"`
		ControlURL    string `json:"controlUrl"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	return &ozoneNet{PDSURL: j.Moderator.PdsURL, LabelerDID: j.Ozone.DID, Identifier: j.Moderator.Identifier,
		Password: j.Moderator.Password, ModeratorDID: j.Moderator.DID, ozoneURL: j.Ozone.URL,
		adminPassword: j.AdminPassword, controlURL: j.ControlURL}
}

func (n *ozoneNet) stopOzone(t *testing.T)  { n.control(t, "/ozone/stop") }
func (n *ozoneNet) startOzone(t *testing.T) { n.control(t, "/ozone/start") }

func (n *ozoneNet) control(t *testing.T, path string) {
	t.Helper()
	resp, err := http.Post(n.controlURL+path, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s", path, b)
	}
}

// emit posts tools.ozone.moderation.emitEvent to Ozone as its admin.
func (n *ozoneNet) emit(t *testing.T, body map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, n.ozoneURL+"/xrpc/tools.ozone.moderation.emitEvent", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("admin", n.adminPassword)
	n.do(t, req, nil)
}

func (n *ozoneNet) do(t *testing.T, req *http.Request, out any) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Errorf("%s: %v", req.URL.Path, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: HTTP %d: %s", req.URL.Path, resp.StatusCode, b)
		return
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Errorf("%s: %v", req.URL.Path, err)
		}
	}
}

// login returns a moderator access token from the PDS.
func (n *ozoneNet) login(t *testing.T) string {
	var out struct{ AccessJwt string }
	n.xrpcPost(t, "com.atproto.server.createSession", map[string]string{"identifier": n.Identifier, "password": n.Password}, "", &out)
	return out.AccessJwt
}

func (n *ozoneNet) xrpcPost(t *testing.T, nsid string, body any, tok string, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, n.PDSURL+"/xrpc/"+nsid, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	n.do(t, req, out)
}

// xrpcGet calls a query through the PDS, proxied to Ozone.
func (n *ozoneNet) xrpcGet(t *testing.T, nsid string, q url.Values, tok string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.PDSURL+"/xrpc/"+nsid+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("atproto-proxy", n.LabelerDID+"#atproto_labeler")
	n.do(t, req, out)
}

// createSubject creates an account with one post on the PDS, for events to be about.
func (n *ozoneNet) createSubject(t *testing.T) (did, uri, cid string) {
	t.Helper()
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	handle := "subject-" + hex.EncodeToString(suffix[:]) + ".test"
	var acct struct{ Did, AccessJwt string }
	n.xrpcPost(t, "com.atproto.server.createAccount", map[string]string{
		"handle": handle, "email": handle + "@example.com", "password": "subject-pass"}, "", &acct)
	var rec struct{ URI, CID string }
	n.xrpcPost(t, "com.atproto.repo.createRecord", map[string]any{"repo": acct.Did, "collection": "app.bsky.feed.post",
		"record": map[string]any{"$type": "app.bsky.feed.post", "text": "hello", "createdAt": time.Now().UTC().Format(time.RFC3339)}},
		acct.AccessJwt, &rec)
	if t.Failed() {
		t.FailNow()
	}
	return acct.Did, rec.URI, rec.CID
}
