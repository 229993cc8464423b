package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/atkafka/atkafka/testenv"
)

// TestProfileEnrichment runs the binary with --api-host against the reference AppView, which indexes the same PDS
// firehose atkafka follows: a post carries the account's profile as the AppView serves it, and after a profile
// change the next post carries the new one. The AppView indexes a change a little after atkafka sees it, so the
// change's own event may still get the old profile; what matters is that this answer is not cached, which the
// second round checks: the test posts once the AppView serves the new profile, and that post must show it.
func TestProfileEnrichment(t *testing.T) {
	t.Parallel()
	k := testenv.Kafka(t)
	env := testenv.StartDevEnv(t, testenv.DevEnvOptions{AppView: true})
	pds := env.PDS[0]
	p := startAtkafka(t, runConfig{Args: relayArgs(pds.WebsocketURL(), "--plc-host", env.PLCURL,
		"--api-host", env.AppViewURL, "--cursor", "0")})
	reader := newTopicReader(t, k.Brokers, p.Topic)

	alice := env.CreateAccount(pds, "alice")
	for i, name := range []string{"Alice", "Alice Renamed"} {
		env.UpsertProfile(alice, name, fmt.Sprintf("profile %d", i+1))
		want := waitProfile(t, env, alice.DID, name)
		post, _ := env.Post(alice, "posted with profile "+name)
		_, ev := reader.find(t, time.Minute, "the post made with profile "+name, func(e *event) bool {
			return e.Operation != nil && e.Operation.URI == post
		})
		var meta struct {
			Profile json.RawMessage `json:"profile"`
		}
		if err := json.Unmarshal(ev.EventMetadata, &meta); err != nil {
			t.Fatalf("eventMetadata %s: %v", ev.EventMetadata, err)
		}
		if err := sameProfile(meta.Profile, want); err != nil {
			t.Fatalf("post %d: eventMetadata.profile %s; getProfile answered %s before the post: %v",
				i+1, meta.Profile, want, err)
		}
	}
}

// waitProfile polls the AppView's app.bsky.actor.getProfile until it serves did's profile with displayName and
// returns that answer. Until the AppView indexed the account it answers 400 (unknown actor); until it indexed
// the profile record, the previous view.
func waitProfile(t testing.TB, env *testenv.DevEnv, did, displayName string) json.RawMessage {
	t.Helper()
	var view json.RawMessage
	what := fmt.Sprintf("the AppView to serve %s with displayName %q", did, displayName)
	eventually(t, 30*time.Second, what, func() error {
		view = nil
		if err := env.XRPC(testenv.XRPCRequest{Service: env.AppViewURL, NSID: "app.bsky.actor.getProfile",
			Params: url.Values{"actor": {did}}}, &view); err != nil {
			var xe *testenv.XRPCError
			if errors.As(err, &xe) && xe.Status == 400 {
				return err // not indexed yet
			}
			return stopTrying{err}
		}
		var p struct {
			DisplayName string `json:"displayName"`
		}
		if err := json.Unmarshal(view, &p); err != nil {
			return stopTrying{fmt.Errorf("getProfile answered %s: %w", view, err)}
		}
		if p.DisplayName != displayName {
			return fmt.Errorf("displayName %q", p.DisplayName)
		}
		return nil
	})
	return view
}

// sameProfile says whether got (eventMetadata.profile) is want (getProfile's answer before the post) verbatim,
// but for postsCount: atkafka fetches the profile while it handles the post, when the AppView may or may not have
// indexed that same post, so the count may be one more. Every other field, counts and indexedAt included, must
// be equal.
func sameProfile(got, want json.RawMessage) error {
	if got == nil {
		return errors.New("no profile")
	}
	g, err := withoutPostsCount(got)
	if err != nil {
		return err
	}
	w, err := withoutPostsCount(want)
	if err != nil {
		return err
	}
	if !testenv.JSONEqual(g.rest, w.rest) {
		return errors.New("fields differ")
	}
	if g.posts != w.posts && g.posts != w.posts+1 {
		return fmt.Errorf("postsCount %d, want %d or %d", g.posts, w.posts, w.posts+1)
	}
	return nil
}

// profileView is a getProfile answer split into its postsCount and everything else.
type profileView struct {
	posts int64
	rest  json.RawMessage
}

func withoutPostsCount(raw json.RawMessage) (profileView, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return profileView{}, err
	}
	var v profileView
	if err := json.Unmarshal(fields["postsCount"], &v.posts); err != nil {
		return profileView{}, fmt.Errorf("postsCount: %w", err)
	}
	delete(fields, "postsCount")
	rest, err := json.Marshal(fields)
	v.rest = rest
	return v, err
}
