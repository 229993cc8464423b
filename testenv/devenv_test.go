package testenv

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDevEnvOzone proves the network with both PDSes, Ozone and the AppView works the way the tests use it:
// accounts on distinct hosts, traffic, a takedown, the AppView serving a profile with its latest handle (its
// schema beside Ozone's in one PostgreSQL), Ozone events emitted and read back directly and through the
// moderator's PDS, and the PLC and Ozone stopped and restarted with their data.
func TestDevEnvOzone(t *testing.T) {
	t.Parallel()
	env := StartDevEnv(t, DevEnvOptions{SecondPDS: true, Ozone: true, AppView: true})
	if len(env.PDS) != 2 || env.PDS[0].Host() == env.PDS[1].Host() {
		t.Fatalf("want two PDSes on distinct hosts, got %+v", env.PDS)
	}

	alice := env.CreateAccount(env.PDS[0], "alice")
	bob := env.CreateAccount(env.PDS[1], "bob")
	postURI, postCID := env.Post(alice, "hello from alice")
	env.Like(bob, postURI, postCID)
	env.Follow(bob, alice.DID)
	env.UpsertProfile(alice, "Alice", "first")
	env.UpsertProfile(alice, "Alice", "second")
	env.UpdateHandle(alice, "alice2")
	env.DeleteRecord(alice, postURI)
	env.Deactivate(bob)
	env.Activate(bob)

	// Bob's DID document names the second PDS's host: what service filters and enrichment read.
	doc := getJSON(t, env.PLCURL+"/"+bob.DID)
	if !strings.Contains(string(doc), env.PDS[1].PublicURL) {
		t.Fatalf("bob's DID document does not name %s: %s", env.PDS[1].PublicURL, doc)
	}

	// The AppView indexes the first PDS asynchronously; .test handles resolve through the PDS, not DNS.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var prof struct {
			Handle      string `json:"handle"`
			DisplayName string `json:"displayName"`
			Description string `json:"description"`
		}
		err := env.XRPC(XRPCRequest{Service: env.AppViewURL, NSID: "app.bsky.actor.getProfile",
			Params: url.Values{"actor": {alice.DID}}}, &prof)
		if err == nil && prof.Handle == alice.Handle && prof.DisplayName == "Alice" && prof.Description == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the AppView (%s) serves alice as %+v (%v), want handle %s, Alice, second",
				env.AppViewURL, prof, err, alice.Handle)
		}
		time.Sleep(100 * time.Millisecond)
	}

	carol := env.CreateAccount(env.PDS[0], "carol")
	env.Takedown(carol)
	if err := env.XRPC(carol.call("com.atproto.repo.createRecord", map[string]any{
		"repo": carol.DID, "collection": "app.bsky.feed.post", "record": map[string]any{"text": "x"},
	}), nil); err == nil {
		t.Fatalf("a taken-down account could still write")
	}
	env.ReverseTakedown(carol)

	// Ozone: emit directly as the admin, read back directly, and through the moderator's PDS session as
	// atkafka's Ozone source does.
	view := env.EmitOzoneEvent(map[string]any{
		"event":   map[string]any{"$type": "tools.ozone.moderation.defs#modEventComment", "comment": "looks fine"},
		"subject": map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": alice.DID},
	})
	var emitted struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(view, &emitted); err != nil || emitted.ID == 0 {
		t.Fatalf("emitEvent answered %s (%v)", view, err)
	}
	// Every kind the Ozone source tests emit is accepted by this Ozone.
	carolRepo := map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": carol.DID}
	for _, ev := range []map[string]any{
		{"$type": "tools.ozone.moderation.defs#modEventReport", "reportType": "com.atproto.moderation.defs#reasonSpam"},
		{"$type": "tools.ozone.moderation.defs#modEventLabel", "createLabelVals": []string{"spam"}, "negateLabelVals": []string{}},
		{"$type": "tools.ozone.moderation.defs#modEventTag", "add": []string{"t1"}, "remove": []string{}},
		{"$type": "tools.ozone.moderation.defs#modEventAcknowledge"},
		{"$type": "tools.ozone.moderation.defs#modEventTakedown"},
		{"$type": "tools.ozone.moderation.defs#modEventReverseTakedown"},
	} {
		env.EmitOzoneEvent(map[string]any{"event": ev, "subject": carolRepo})
	}
	events := env.QueryOzoneEvents(nil)
	if !containsEventID(events, emitted.ID) || len(events) < 7 {
		t.Fatalf("queryEvents does not list event %d and the six others: %s", emitted.ID, events)
	}

	mod := &Account{PDS: env.Moderator.PDSURL}
	env.must(XRPCRequest{Service: mod.PDS, NSID: "com.atproto.server.createSession", Procedure: true,
		Input: map[string]any{"identifier": env.Moderator.Identifier, "password": env.Moderator.Password}}, mod)
	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	env.must(XRPCRequest{Service: mod.PDS, NSID: "tools.ozone.moderation.queryEvents", Auth: mod.Bearer(),
		Proxy: env.OzoneDID + "#atproto_labeler", Params: url.Values{"sortDirection": {"asc"}}}, &page)
	if !containsEventID(page.Events, emitted.ID) {
		t.Fatalf("queryEvents through the PDS does not list event %d: %s", emitted.ID, page.Events)
	}

	// PLC stopped mid-test: resolution fails; restarted: the same DIDs resolve again.
	env.StopPLC()
	if resp, err := http.Get(env.PLCURL + "/" + alice.DID); err == nil {
		resp.Body.Close()
		t.Fatalf("PLC still answers after StopPLC: HTTP %d", resp.StatusCode)
	}
	env.StartPLC()
	getJSON(t, env.PLCURL+"/"+alice.DID)

	// Ozone stopped and restarted: calls fail meanwhile, then the earlier events are still there.
	env.StopOzone()
	if err := env.XRPC(XRPCRequest{Service: env.OzoneURL, NSID: "tools.ozone.moderation.queryEvents",
		Auth: env.AdminAuth()}, nil); err == nil {
		t.Fatalf("Ozone still answers after StopOzone")
	}
	env.StartOzone()
	if !containsEventID(env.QueryOzoneEvents(nil), emitted.ID) {
		t.Fatalf("event %d lost across an Ozone restart", emitted.ID)
	}
	env.EmitOzoneEvent(map[string]any{
		"event":   map[string]any{"$type": "tools.ozone.moderation.defs#modEventAcknowledge"},
		"subject": map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": alice.DID},
	})
}

// TestTapAgainstPDS proves Tap backfills a dev-env account (live:false), then delivers live records, accepts
// acks, survives a restart with its database, and drains its outbox.
func TestTapAgainstPDS(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command(TapBinary(), "--version").Output(); err == nil && !strings.Contains(string(out), TapVersion) {
		t.Fatalf("tap at %s is %s, want %s: rerun testenv/setup-atproto.sh", TapBinary(), out, TapVersion)
	}
	env := StartDevEnv(t, DevEnvOptions{})
	alice := env.CreateAccount(env.PDS[0], "alice")
	for _, text := range []string{"one", "two", "three"} {
		env.Post(alice, text)
	}

	tap := StartTap(t, TapOptions{RelayURL: env.PDS[0].URL, PLCURL: env.PLCURL, RetryTimeout: 2 * time.Second})
	tap.AddRepos(alice.DID)

	ch := dialTap(t, tap)
	backfill := ch.records(t, 3)
	for _, ev := range backfill {
		if ev.Record.Live || ev.Record.DID != alice.DID || ev.Record.Collection != "app.bsky.feed.post" {
			t.Fatalf("unexpected backfill event %+v", ev)
		}
	}

	env.Post(alice, "live one")
	if live := ch.records(t, 1); !live[0].Record.Live {
		t.Fatalf("want a live record, got %+v", live[0])
	}
	ch.conn.Close(websocket.StatusNormalClosure, "")
	// Drained before the restart: Tap deletes acked events in batches every 10 s and a restart drops an unsaved
	// batch, which would be redelivered.
	tap.WaitOutboxEmpty(20 * time.Second)

	// Restarted with its database, Tap still follows alice.
	tap.Restart()
	ch = dialTap(t, tap)
	env.Post(alice, "after restart")
	if ev := ch.records(t, 1)[0]; !ev.Record.Live || ev.Record.Record["text"] != "after restart" {
		t.Fatalf("want the post made after the restart, got %+v", ev)
	}
}

// tapEvent is the part of Tap's /channel messages this test looks at (GUIDE §2).
type tapEvent struct {
	ID     int64  `json:"id"`
	Type   string `json:"type"`
	Record struct {
		Live       bool           `json:"live"`
		DID        string         `json:"did"`
		Collection string         `json:"collection"`
		Action     string         `json:"action"`
		Record     map[string]any `json:"record"`
	} `json:"record"`
}

type tapChannel struct {
	conn *websocket.Conn
	ctx  context.Context
}

func dialTap(t *testing.T, tap *Tap) *tapChannel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, tap.ChannelURL(), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", tap.ChannelURL(), err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &tapChannel{conn: conn, ctx: ctx}
}

// records reads until n record events arrived, acking every event (identity events included) as a consumer must.
func (c *tapChannel) records(t *testing.T, n int) []tapEvent {
	t.Helper()
	var got []tapEvent
	for len(got) < n {
		_, msg, err := c.conn.Read(c.ctx)
		if err != nil {
			t.Fatalf("reading tap channel after %d of %d records: %v", len(got), n, err)
		}
		var ev tapEvent
		if err := json.Unmarshal(msg, &ev); err != nil {
			t.Fatalf("tap sent %q: %v", msg, err)
		}
		ack, _ := json.Marshal(map[string]any{"type": "ack", "id": ev.ID})
		if err := c.conn.Write(c.ctx, websocket.MessageText, ack); err != nil {
			t.Fatalf("ack: %v", err)
		}
		if ev.Type == "record" {
			got = append(got, ev)
		}
	}
	return got
}

func containsEventID(events []json.RawMessage, id int64) bool {
	for _, raw := range events {
		var ev struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.ID == id {
			return true
		}
	}
	return false
}

func getJSON(t *testing.T, u string) json.RawMessage {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var out json.RawMessage
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	return out
}
