package testenv

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// devEnvStartTimeout bounds how long the network may take to print its description. It needs about 3 s of CPU
// (5 s with Ozone, 3 s more with the AppView), but with several test packages starting networks at once on two
// cores a minute happens.
const devEnvStartTimeout = 3 * time.Minute

// DevEnvOptions chooses the optional parts of the network; the PLC and one PDS always run.
type DevEnvOptions struct {
	// SecondPDS starts another PDS. Its accounts' DID documents name host 127.0.0.1 instead of localhost, so
	// service filters can tell the two PDSes apart.
	SecondPDS bool
	// Ozone starts Ozone, with a private PostgreSQL, as the PDSes' moderation service, and makes an account on
	// the first PDS its moderator (DevEnv.Moderator).
	Ozone bool
	// AppView starts the reference AppView (@atproto/bsky, with the bsync service it needs) indexing the first
	// PDS's firehose from its first event, for tests of what atkafka asks an AppView (--api-host). It has a
	// PostgreSQL schema of its own, in the same private cluster as Ozone's when both run. It indexes
	// asynchronously: a test polls it (app.bsky.actor.getProfile and the like) until a write shows.
	AppView bool
}

// PDS is one PDS of the network.
type PDS struct {
	// URL is where to reach it, http://localhost:PORT.
	URL string `json:"url"`
	// PublicURL is what its accounts' DID documents name as #atproto_pds, the value service filters see.
	PublicURL string `json:"publicUrl"`
	// DID is the PDS's service DID (did:web:localhost for both PDSes, as dev-env sets it).
	DID string `json:"did"`
}

// Host returns the host name of PublicURL, what --watched-services / --ignored-services patterns match.
func (p PDS) Host() string {
	u, err := url.Parse(p.PublicURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// WebsocketURL returns the PDS as a relay host (ws://localhost:PORT): the PDS serves subscribeRepos itself.
func (p PDS) WebsocketURL() string {
	return "ws" + strings.TrimPrefix(p.URL, "http")
}

// Moderator is the PDS account that Ozone knows as a moderator, the login atkafka's Ozone mode uses.
type Moderator struct {
	Identifier string `json:"identifier"`
	Password   string `json:"password"`
	DID        string `json:"did"`
	// PDSURL is the PDS to log in at, which proxies to Ozone with `atproto-proxy: <OzoneDID>#atproto_labeler`.
	PDSURL string `json:"pdsUrl"`
}

// DevEnv is a running reference atproto network (@atproto/dev-env via testenv/devenv/network.mjs) with helpers
// that make real traffic over XRPC. Helpers fail the test on error, so call them from the test goroutine; use
// XRPC directly where an error is expected or outside it.
type DevEnv struct {
	// PLCURL is the PLC directory's URL (http://localhost:PORT).
	PLCURL string
	// PDS lists the PDSes, the first one always present.
	PDS []PDS
	// OzoneURL and OzoneDID describe Ozone (empty without DevEnvOptions.Ozone). The DID's #atproto_labeler
	// endpoint is OzoneURL, so PDS proxying works.
	OzoneURL, OzoneDID string
	// AppViewURL and AppViewDID describe the AppView (empty without DevEnvOptions.AppView). The URL is what
	// atkafka's --api-host takes.
	AppViewURL, AppViewDID string
	// Moderator is Ozone's moderator account (zero without Ozone).
	Moderator Moderator
	// AdminPassword is the PDSes' and Ozone's admin password (HTTP Basic, user "admin").
	AdminPassword string
	// PostgresURL is Ozone's and the AppView's database (empty without either).
	PostgresURL string

	t          testing.TB
	controlURL string
	client     *http.Client
}

// networkInfo is the JSON line network.mjs prints when ready.
type networkInfo struct {
	PLCURL string `json:"plcUrl"`
	PDS    []PDS  `json:"pds"`
	Ozone  *struct {
		URL string `json:"url"`
		DID string `json:"did"`
	} `json:"ozone"`
	AppView *struct {
		URL string `json:"url"`
		DID string `json:"did"`
	} `json:"appview"`
	Moderator     *Moderator `json:"moderator"`
	AdminPassword string     `json:"adminPassword"`
	ControlURL    string     `json:"controlUrl"`
}

// DevEnvDir returns testenv/devenv, where network.mjs and its node_modules live.
func DevEnvDir() string { return filepath.Join(RepoRoot(), "testenv", "devenv") }

// StartDevEnv starts the network and stops it when the test ends. It needs testenv/setup-atproto.sh to have
// installed dev-env (else the test is Unavailable). The network also exits on its own when this process dies.
func StartDevEnv(t testing.TB, opts DevEnvOptions) *DevEnv {
	t.Helper()
	dir := DevEnvDir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@atproto", "dev-env", "package.json")); err != nil {
		Unavailable(t, "@atproto/dev-env is not installed in %s (run testenv/setup-atproto.sh)", dir)
	}
	env := &DevEnv{t: t, client: &http.Client{Timeout: 30 * time.Second}}

	args := []string{"network.mjs", "--dir", filepath.Join(t.TempDir(), "devenv")}
	if opts.SecondPDS {
		args = append(args, "--second-pds")
	}
	if opts.Ozone || opts.AppView {
		// Started first so that it is stopped last, after Ozone and the AppView let go of it.
		env.PostgresURL = StartPostgres(t)
		args = append(args, "--pg-url", env.PostgresURL)
	}
	if opts.Ozone {
		args = append(args, "--ozone")
	}
	if opts.AppView {
		args = append(args, "--appview")
	}

	cmd := exec.Command(devEnvNode(dir), args...)
	cmd.Dir = dir
	// The network exits when its stdin closes: the pipe is our lifeline, closed by the kernel if we die.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("dev-env: %v", err)
	}
	// An os.Pipe rather than StdoutPipe: Wait (run as soon as the process exits) must not close our reading end
	// before the JSON line was read.
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatalf("dev-env: %v", err)
	}
	cmd.Stdout = stdoutW
	proc, err := startPeer("dev-env network", cmd)
	stdoutW.Close()
	if err != nil {
		stdoutR.Close()
		t.Fatalf("dev-env: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		proc.stop(syscall.SIGTERM, 15*time.Second)
		if t.Failed() {
			t.Logf("dev-env: %s", proc.describe())
		}
	})

	ready := make(chan networkInfo, 1)
	go scanNetworkOutput(stdoutR, proc.out, ready)
	start := time.Now()
	var info networkInfo
	select {
	case info = <-ready:
	case <-proc.exited:
		t.Fatalf("dev-env: network did not start: %s", proc.describe())
	case <-time.After(devEnvStartTimeout):
		t.Fatalf("dev-env: network not ready after %s: %s", devEnvStartTimeout, proc.describe())
	}
	t.Logf("dev-env: network ready in %s (PLC %s, PDS %v)", time.Since(start).Round(time.Millisecond), info.PLCURL, info.PDS)

	env.PLCURL, env.PDS, env.AdminPassword, env.controlURL = info.PLCURL, info.PDS, info.AdminPassword, info.ControlURL
	if info.Ozone != nil {
		env.OzoneURL, env.OzoneDID = info.Ozone.URL, info.Ozone.DID
	}
	if info.AppView != nil {
		env.AppViewURL, env.AppViewDID = info.AppView.URL, info.AppView.DID
	}
	if info.Moderator != nil {
		env.Moderator = *info.Moderator
	}
	return env
}

// scanNetworkOutput hands the first JSON line with a PLC URL to ready and keeps everything else for failure
// messages. It reads until EOF so that node never blocks on a full stdout pipe.
func scanNetworkOutput(r io.ReadCloser, keep io.Writer, ready chan<- networkInfo) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		var info networkInfo
		if !sent && json.Unmarshal(sc.Bytes(), &info) == nil && info.PLCURL != "" {
			ready <- info
			sent = true
			continue
		}
		fmt.Fprintf(keep, "%s\n", sc.Bytes())
	}
}

// devEnvNode returns the node binary setup-atproto.sh installed dev-env with (its native modules only load in
// that version), ATKAFKA_NODE when set, or node from PATH.
func devEnvNode(dir string) string {
	if bin := os.Getenv("ATKAFKA_NODE"); bin != "" {
		return bin
	}
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", ".atkafka-node")); err == nil {
		if bin := strings.TrimSpace(string(b)); bin != "" {
			return bin
		}
	}
	return "node"
}

// XRPCRequest is one XRPC call for DevEnv.XRPC.
type XRPCRequest struct {
	// Service is the base URL of the server to call (a PDS, Ozone or the AppView).
	Service string
	// NSID names the method, e.g. com.atproto.repo.createRecord.
	NSID string
	// Procedure makes it a POST, with Input as the JSON body when non-nil (some procedures take no body at
	// all); otherwise it is a GET query.
	Procedure bool
	// Input is the procedure's JSON body.
	Input any
	// Params is the query string.
	Params url.Values
	// Auth is the Authorization header: Account.Bearer() or DevEnv.AdminAuth(); empty for none.
	Auth string
	// Proxy is the atproto-proxy header, e.g. OzoneDID + "#atproto_labeler" to go through a PDS to Ozone.
	Proxy string
}

// XRPCError is an XRPC call that was answered with a non-2xx status.
type XRPCError struct {
	// Status is the HTTP status code.
	Status int
	// Name and Message are the XRPC error body's fields (Name e.g. "InvalidRequest"); Message holds the raw
	// body when it was not an XRPC error body.
	Name    string `json:"error"`
	Message string `json:"message"`
}

// Error implements error.
func (e *XRPCError) Error() string {
	return fmt.Sprintf("xrpc: HTTP %d %s: %s", e.Status, e.Name, e.Message)
}

// XRPC makes one call and decodes the JSON answer into output (unless output is nil). A non-2xx answer is an
// *XRPCError. Every helper below goes through it.
func (e *DevEnv) XRPC(req XRPCRequest, output any) error {
	u := strings.TrimSuffix(req.Service, "/") + "/xrpc/" + req.NSID
	if len(req.Params) > 0 {
		u += "?" + req.Params.Encode()
	}
	method, body := http.MethodGet, io.Reader(nil)
	if req.Procedure {
		method = http.MethodPost
		if req.Input != nil {
			b, err := json.Marshal(req.Input)
			if err != nil {
				return fmt.Errorf("xrpc %s: %w", req.NSID, err)
			}
			body = bytes.NewReader(b)
		}
	}
	hr, err := http.NewRequest(method, u, body)
	if err != nil {
		return fmt.Errorf("xrpc %s: %w", req.NSID, err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.Auth != "" {
		hr.Header.Set("Authorization", req.Auth)
	}
	if req.Proxy != "" {
		hr.Header.Set("atproto-proxy", req.Proxy)
	}
	resp, err := e.client.Do(hr)
	if err != nil {
		return fmt.Errorf("xrpc %s: %w", req.NSID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("xrpc %s: %w", req.NSID, err)
	}
	if resp.StatusCode/100 != 2 {
		xe := &XRPCError{Status: resp.StatusCode}
		if json.Unmarshal(b, xe) != nil || xe.Name == "" {
			xe.Message = string(b)
		}
		return fmt.Errorf("xrpc %s: %w", req.NSID, xe)
	}
	if output == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, output); err != nil {
		return fmt.Errorf("xrpc %s: decoding %q: %w", req.NSID, b, err)
	}
	return nil
}

// must runs XRPC and fails the test on error: the helpers' one way of calling.
func (e *DevEnv) must(req XRPCRequest, output any) {
	e.t.Helper()
	if err := e.XRPC(req, output); err != nil {
		e.t.Fatalf("dev-env: %v", err)
	}
}

// AdminAuth returns the Authorization header value for the PDS and Ozone admin (Basic admin:<AdminPassword>).
func (e *DevEnv) AdminAuth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+e.AdminPassword))
}

// Account is an account created by the test, with its session.
type Account struct {
	// DID, Handle and Password identify the account; AccessJwt and RefreshJwt are the session the PDS opened at
	// creation (access tokens last two hours in dev-env, longer than any test).
	DID        string `json:"did"`
	Handle     string `json:"handle"`
	AccessJwt  string `json:"accessJwt"`
	RefreshJwt string `json:"refreshJwt"`
	Password   string `json:"-"`
	// PDS is the URL of the PDS holding the account.
	PDS string `json:"-"`
}

// Bearer returns the Authorization header value for the account's session.
func (a *Account) Bearer() string { return "Bearer " + a.AccessJwt }

// call is an authenticated procedure on the account's own PDS, the shape of every repo write.
func (a *Account) call(nsid string, input any) XRPCRequest {
	return XRPCRequest{Service: a.PDS, NSID: nsid, Procedure: true, Input: input, Auth: a.Bearer()}
}

// CreateAccount creates an account on pds. A handle without a dot gets ".test" appended: the PDS only serves
// .test handles, and Tap needs a non-reserved TLD to resolve the DID. The password is derived from the handle.
func (e *DevEnv) CreateAccount(pds PDS, handle string) *Account {
	e.t.Helper()
	if !strings.Contains(handle, ".") {
		handle += ".test"
	}
	acct := &Account{Password: "pass-" + handle, PDS: pds.URL}
	e.must(XRPCRequest{Service: pds.URL, NSID: "com.atproto.server.createAccount", Procedure: true, Input: map[string]any{
		"handle": handle, "email": handle + "@example.com", "password": acct.Password,
	}}, acct)
	return acct
}

// recordRef is what the PDS answers to a record write.
type recordRef struct {
	URI string `json:"uri"`
	CID string `json:"cid"`
}

// CreateRecord creates record in collection (with a TID rkey chosen by the PDS) and returns its URI and CID.
// The record's $type defaults to collection.
func (e *DevEnv) CreateRecord(acct *Account, collection string, record map[string]any) (uri, cid string) {
	e.t.Helper()
	return e.writeRecord(acct, "com.atproto.repo.createRecord", collection, "", record)
}

// PutRecord creates or replaces the record at collection/rkey and returns its URI and CID.
func (e *DevEnv) PutRecord(acct *Account, collection, rkey string, record map[string]any) (uri, cid string) {
	e.t.Helper()
	return e.writeRecord(acct, "com.atproto.repo.putRecord", collection, rkey, record)
}

func (e *DevEnv) writeRecord(acct *Account, nsid, collection, rkey string, record map[string]any) (string, string) {
	e.t.Helper()
	if _, ok := record["$type"]; !ok {
		record["$type"] = collection
	}
	input := map[string]any{"repo": acct.DID, "collection": collection, "record": record}
	if rkey != "" {
		input["rkey"] = rkey
	}
	var ref recordRef
	e.must(acct.call(nsid, input), &ref)
	return ref.URI, ref.CID
}

// DeleteRecord deletes the record at uri (at://DID/collection/rkey) from acct's repo.
func (e *DevEnv) DeleteRecord(acct *Account, uri string) {
	e.t.Helper()
	parts := strings.Split(strings.TrimPrefix(uri, "at://"), "/")
	if len(parts) != 3 {
		e.t.Fatalf("dev-env: DeleteRecord: %q is not at://DID/collection/rkey", uri)
	}
	e.must(acct.call("com.atproto.repo.deleteRecord", map[string]any{
		"repo": acct.DID, "collection": parts[1], "rkey": parts[2],
	}), nil)
}

// now is the createdAt format app.bsky records use.
func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// Post creates an app.bsky.feed.post with text.
func (e *DevEnv) Post(acct *Account, text string) (uri, cid string) {
	e.t.Helper()
	return e.CreateRecord(acct, "app.bsky.feed.post", map[string]any{"text": text, "createdAt": now()})
}

// Like creates an app.bsky.feed.like of the record at subjectURI/subjectCID.
func (e *DevEnv) Like(acct *Account, subjectURI, subjectCID string) (uri, cid string) {
	e.t.Helper()
	return e.CreateRecord(acct, "app.bsky.feed.like", map[string]any{
		"subject": map[string]any{"uri": subjectURI, "cid": subjectCID}, "createdAt": now(),
	})
}

// Follow creates an app.bsky.graph.follow of subjectDID.
func (e *DevEnv) Follow(acct *Account, subjectDID string) (uri, cid string) {
	e.t.Helper()
	return e.CreateRecord(acct, "app.bsky.graph.follow", map[string]any{"subject": subjectDID, "createdAt": now()})
}

// UpsertProfile writes acct's app.bsky.actor.profile/self (a create the first time, an update after).
func (e *DevEnv) UpsertProfile(acct *Account, displayName, description string) (uri, cid string) {
	e.t.Helper()
	return e.PutRecord(acct, "app.bsky.actor.profile", "self", map[string]any{
		"displayName": displayName, "description": description,
	})
}

// UpdateHandle changes acct's handle (".test" appended when it has no dot), which emits #identity, and updates
// acct.Handle.
func (e *DevEnv) UpdateHandle(acct *Account, handle string) {
	e.t.Helper()
	if !strings.Contains(handle, ".") {
		handle += ".test"
	}
	e.must(acct.call("com.atproto.identity.updateHandle", map[string]any{"handle": handle}), nil)
	acct.Handle = handle
}

// Deactivate deactivates acct (an #account event with active false, status deactivated).
func (e *DevEnv) Deactivate(acct *Account) {
	e.t.Helper()
	e.must(acct.call("com.atproto.server.deactivateAccount", map[string]any{}), nil)
}

// Activate reactivates a deactivated acct.
func (e *DevEnv) Activate(acct *Account) {
	e.t.Helper()
	e.must(acct.call("com.atproto.server.activateAccount", nil), nil)
}

// Takedown takes acct down at its PDS as the admin (an #account event with status takendown); its sessions stop
// working.
func (e *DevEnv) Takedown(acct *Account) {
	e.t.Helper()
	e.setTakedown(acct, true)
}

// ReverseTakedown lifts a Takedown.
func (e *DevEnv) ReverseTakedown(acct *Account) {
	e.t.Helper()
	e.setTakedown(acct, false)
}

func (e *DevEnv) setTakedown(acct *Account, applied bool) {
	e.t.Helper()
	takedown := map[string]any{"applied": applied}
	if applied {
		takedown["ref"] = "atkafka-test"
	}
	e.must(XRPCRequest{Service: acct.PDS, NSID: "com.atproto.admin.updateSubjectStatus", Procedure: true,
		Auth: e.AdminAuth(), Input: map[string]any{
			"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": acct.DID},
			"takedown": takedown,
		}}, nil)
}

// EmitOzoneEvent emits a moderation event (tools.ozone.moderation.emitEvent input: event, subject, ...) on Ozone
// as the admin and returns the created modEventView. createdBy defaults to the moderator's DID.
func (e *DevEnv) EmitOzoneEvent(input map[string]any) json.RawMessage {
	e.t.Helper()
	e.needOzone()
	if _, ok := input["createdBy"]; !ok {
		input["createdBy"] = e.Moderator.DID
	}
	var view json.RawMessage
	e.must(XRPCRequest{Service: e.OzoneURL, NSID: "tools.ozone.moderation.emitEvent", Procedure: true,
		Auth: e.AdminAuth(), Input: input}, &view)
	return view
}

// QueryOzoneEvents returns every event tools.ozone.moderation.queryEvents lists for params, following its cursor,
// oldest first unless params say otherwise: the truth to compare what atkafka produced with.
func (e *DevEnv) QueryOzoneEvents(params url.Values) []json.RawMessage {
	e.t.Helper()
	e.needOzone()
	q := url.Values{"sortDirection": {"asc"}, "limit": {"100"}}
	for k, v := range params {
		q[k] = v
	}
	var all []json.RawMessage
	for {
		var page struct {
			Events []json.RawMessage `json:"events"`
			Cursor string            `json:"cursor"`
		}
		e.must(XRPCRequest{Service: e.OzoneURL, NSID: "tools.ozone.moderation.queryEvents", Params: q,
			Auth: e.AdminAuth()}, &page)
		all = append(all, page.Events...)
		if page.Cursor == "" || len(page.Events) == 0 {
			return all
		}
		q.Set("cursor", page.Cursor)
	}
}

func (e *DevEnv) needOzone() {
	e.t.Helper()
	if e.OzoneURL == "" {
		e.t.Fatalf("dev-env: started without Ozone (DevEnvOptions.Ozone)")
	}
}

// StopPLC stops the PLC directory; DID resolution fails until StartPLC.
func (e *DevEnv) StopPLC() { e.t.Helper(); e.control("/plc/stop") }

// StartPLC restarts the PLC on the same port with the same DIDs.
func (e *DevEnv) StartPLC() { e.t.Helper(); e.control("/plc/start") }

// StopOzone stops Ozone (API and daemon); its database stays.
func (e *DevEnv) StopOzone() { e.t.Helper(); e.control("/ozone/stop") }

// StartOzone restarts Ozone on the same port with the same DID and database; it needs the PLC to be up.
func (e *DevEnv) StartOzone() { e.t.Helper(); e.control("/ozone/start") }

// control asks network.mjs to stop or start a service and waits until it did.
func (e *DevEnv) control(path string) {
	e.t.Helper()
	// Starting Ozone runs migrations and registers DIDs: allow more than the XRPC timeout.
	client := &http.Client{Timeout: 90 * time.Second}
	resp, err := client.Post(e.controlURL+path, "application/json", nil)
	if err != nil {
		e.t.Fatalf("dev-env: %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("dev-env: %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
}
