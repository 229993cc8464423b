package filter

import (
	"strings"
	"testing"
)

func mustNew(t *testing.T, cfg Config) *Filter {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return f
}

func TestCollectionMatching(t *testing.T) {
	patterns := []string{"app.bsky.*", "com.example.thing", "chat.bsky.convo.*"}
	cases := []struct {
		nsid  string
		match bool
	}{
		{"app.bsky.feed.post", true},
		{"app.bsky.actor.profile", true},
		{"app.bsky", true},        // the prefix itself
		{"app.bsky.feed", true},   // any depth under it
		{"app.bskyx.feed", false}, // segment boundary, not string prefix
		{"app.bskyx", false},      // ditto
		{"app.bsk", false},        // shorter
		{"app", false},            // a parent of the prefix
		{"xapp.bsky.feed.post", false},
		{"com.example.thing", true}, // exact
		{"com.example.thing.sub", false},
		{"com.example.thin", false},
		{"com.example", false},
		{"chat.bsky.convo", true},
		{"chat.bsky.convo.message", true},
		{"chat.bsky.actor.declaration", false},
		{"APP.BSKY.feed.post", false}, // matching is exact, as collections arrive normalized
		{"", false},
	}
	watched := mustNew(t, Config{WatchedCollections: patterns})
	ignored := mustNew(t, Config{IgnoredCollections: patterns})
	none := mustNew(t, Config{})
	for _, c := range cases {
		if got := watched.Collection(c.nsid); got != c.match {
			t.Errorf("watched.Collection(%q) = %v, want %v", c.nsid, got, c.match)
		}
		if got := ignored.Collection(c.nsid); got != !c.match {
			t.Errorf("ignored.Collection(%q) = %v, want %v", c.nsid, got, !c.match)
		}
		if !none.Collection(c.nsid) {
			t.Errorf("no rules: Collection(%q) dropped", c.nsid)
		}
	}
	if !watched.HasCollectionRules() || !ignored.HasCollectionRules() || none.HasCollectionRules() {
		t.Error("HasCollectionRules wrong")
	}
}

func TestCollectionPatternErrors(t *testing.T) {
	cases := []struct {
		pattern string
		want    string // substring of the error
	}{
		{"", "empty entry"},
		{" ", "empty entry"},
		{" app.bsky.feed.post", "whitespace"},
		{"app.*.post", `"*" is only allowed`},
		{"*.bsky.feed", `"*" is only allowed`},
		{"app.bsky*", `"*" is only allowed`},
		{"app.bsky.feed*", `"*" is only allowed`},
		{"*", `"*" is only allowed`},
		{".*", `"*" is only allowed`},
		{"app..*", "empty segment"},
		{"app.bsky.", "not a valid NSID"},
		{"app.bsky", "not a valid NSID"}, // two segments: an NSID needs three; use "app.bsky.*"
		{"app.bsky.feed.po st", "not a valid NSID"},
		{"app.-bsky.*", "hyphen"},
		{"app.bs_ky.*", "character"},
		{"app.bsky.feed.post-x", "not a valid NSID"}, // hyphen in the name segment
	}
	for _, c := range cases {
		for _, cfg := range []Config{{WatchedCollections: []string{"app.bsky.*", c.pattern}}, {IgnoredCollections: []string{"app.bsky.*", c.pattern}}} {
			_, err := New(cfg)
			if err == nil {
				t.Errorf("pattern %q accepted", c.pattern)
				continue
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "entry 2") {
				t.Errorf("pattern %q: error %q lacks %q or the entry number", c.pattern, err, c.want)
			}
		}
	}
	for _, ok := range []string{"app.*", "app.bsky.feed.post.*", "com.example-co.thing", "com.example.thing", "a.b.c"} {
		if _, err := New(Config{WatchedCollections: []string{ok}}); err != nil {
			t.Errorf("pattern %q rejected: %v", ok, err)
		}
	}
}

func TestBothListsAreAnError(t *testing.T) {
	_, err := New(Config{WatchedCollections: []string{"app.bsky.*"}, IgnoredCollections: []string{"chat.bsky.*"}})
	if err == nil || !strings.Contains(err.Error(), "collections") {
		t.Errorf("both collection lists: err = %v", err)
	}
	_, err = New(Config{WatchedServices: []string{"a.example"}, IgnoredServices: []string{"b.example"}})
	if err == nil || !strings.Contains(err.Error(), "services") {
		t.Errorf("both service lists: err = %v", err)
	}
	// One of each kind is fine.
	mustNew(t, Config{WatchedCollections: []string{"app.bsky.*"}, IgnoredServices: []string{"b.example"}})
	// Every problem is reported at once.
	_, err = New(Config{WatchedCollections: []string{"", "app.*.x"}, WatchedServices: []string{"https://x.example"}})
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want three errors joined, got %v", err)
	}
}

func host(h string, port int) Resolution { return Resolution{Outcome: Resolved, Host: h, Port: port} }

func TestServiceMatching(t *testing.T) {
	patterns := []string{"*.bsky.network", "blacksky.app", "localhost:2583", "127.0.0.1", "[::1]:9000"}
	cases := []struct {
		r     Resolution
		match bool
	}{
		{host("morel.us-east.host.bsky.network", 443), true},
		{host("x.bsky.network", 443), true},
		{host("bsky.network", 443), false},      // "*." means strictly under
		{host("evilbsky.network", 443), false},  // label boundary
		{host("bsky.network.evil", 443), false}, // suffix, not substring
		{host("xbsky.network", 443), false},
		{host("blacksky.app", 443), true}, // bare name: the host itself
		{host("pds.blacksky.app", 443), true},
		{host("a.b.blacksky.app", 443), true},
		{host("notblacksky.app", 443), false},
		{host("blacksky.app.evil", 443), false},
		{host("blacksky.apps", 443), false},
		{host("localhost", 2583), true}, // port must match when given
		{host("localhost", 2584), false},
		{host("127.0.0.1", 8080), true}, // no port: any port
		{host("10.127.0.0.1", 80), false},
		{host("::1", 9000), true},
		{host("::1", 9001), false},
	}
	watched := mustNew(t, Config{WatchedServices: patterns})
	ignored := mustNew(t, Config{IgnoredServices: patterns})
	for _, c := range cases {
		if got := watched.Service(c.r); got != c.match {
			t.Errorf("watched.Service(%+v) = %v, want %v", c.r, got, c.match)
		}
		if got := ignored.Service(c.r); got != !c.match {
			t.Errorf("ignored.Service(%+v) = %v, want %v", c.r, got, !c.match)
		}
	}
	if !watched.HasServiceRules() || !ignored.HasServiceRules() || mustNew(t, Config{}).HasServiceRules() {
		t.Error("HasServiceRules wrong")
	}
	// A hostname pattern made of digit labels must not suffix-match an IP address.
	digits := mustNew(t, Config{WatchedServices: []string{"0.1"}})
	if digits.Service(host("127.0.0.1", 80)) {
		t.Error(`"0.1" matched 127.0.0.1`)
	}
}

func TestServiceOutcomes(t *testing.T) {
	watched := mustNew(t, Config{WatchedServices: []string{"blacksky.app"}})
	ignored := mustNew(t, Config{IgnoredServices: []string{"blacksky.app"}})
	none := mustNew(t, Config{})
	cases := []struct {
		name                   string
		r                      Resolution
		watched, ignored, none bool
	}{
		{"resolved, matching", host("blacksky.app", 443), true, false, true},
		{"resolved, other", host("other.example", 443), false, true, true},
		{"definitively no PDS", Resolution{Outcome: NoPDS}, false, true, true},
		{"unknown fails open", Resolution{Outcome: Unknown}, true, true, true},
		{"zero value is unknown", Resolution{}, true, true, true},
	}
	for _, c := range cases {
		if got := watched.Service(c.r); got != c.watched {
			t.Errorf("%s: watched = %v", c.name, got)
		}
		if got := ignored.Service(c.r); got != c.ignored {
			t.Errorf("%s: ignored = %v", c.name, got)
		}
		if got := none.Service(c.r); got != c.none {
			t.Errorf("%s: no rules = %v", c.name, got)
		}
	}
}

func TestServicePatternNormalisation(t *testing.T) {
	f := mustNew(t, Config{WatchedServices: []string{"*.BSKY.Network", "BlackSky.app."}})
	for _, h := range []string{"a.bsky.network", "blacksky.app"} {
		if !f.Service(host(h, 443)) {
			t.Errorf("%s not matched by case/trailing-dot variant", h)
		}
	}
}

func TestServicePatternErrors(t *testing.T) {
	cases := []struct{ pattern, want string }{
		{"", "empty entry"},
		{"https://blacksky.app", "not a URL"},
		{"blacksky.app/xrpc", "no path"},
		{"user@blacksky.app", "no path"},
		{"*.*.bsky.network", `"*" is only allowed`},
		{"bsky.*.network", `"*" is only allowed`},
		{"*bsky.network", `"*" is only allowed`},
		{"*", `"*" is only allowed`},
		{"bsky..network", "empty label"},
		{".bsky.network", "empty label"},
		{"-bsky.network", "hyphen"},
		{"bsky network", "character"},
		{"blacksky.app:", "bad port"},
		{"blacksky.app:0", "bad port"},
		{"blacksky.app:99999", "bad port"},
		{"blacksky.app:https", "bad port"},
		{"*.127.0.0.1", "IP"},
		{" blacksky.app", "whitespace"},
		{strings.Repeat("a", 64) + ".app", "longer than 63"},
	}
	for _, c := range cases {
		_, err := New(Config{IgnoredServices: []string{c.pattern}})
		if err == nil {
			t.Errorf("pattern %q accepted", c.pattern)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("pattern %q: error %q lacks %q or the entry number", c.pattern, err, c.want)
		}
	}
}

func TestResolvedEndpoint(t *testing.T) {
	cases := []struct {
		endpoint string
		want     Resolution
	}{
		{"https://morel.us-east.host.bsky.network", host("morel.us-east.host.bsky.network", 443)},
		{"https://Blacksky.APP/", host("blacksky.app", 443)},
		{"https://pds.example.:8443", host("pds.example", 8443)},
		{"http://localhost:2583", host("localhost", 2583)},
		{"http://pds.example", host("pds.example", 80)},
		{"http://[::1]:9000", host("::1", 9000)},
		{"", Resolution{Outcome: NoPDS}},
		{"pds.example", Resolution{Outcome: NoPDS}},
		{"ftp://pds.example", Resolution{Outcome: NoPDS}},
		{"https://", Resolution{Outcome: NoPDS}},
		{"https://pds.example:0", Resolution{Outcome: NoPDS}},
		{"://bad", Resolution{Outcome: NoPDS}},
	}
	for _, c := range cases {
		if got := ResolvedEndpoint(c.endpoint); got != c.want {
			t.Errorf("ResolvedEndpoint(%q) = %+v, want %+v", c.endpoint, got, c.want)
		}
	}
}

func TestNilFilterKeepsEverything(t *testing.T) {
	var f *Filter
	if !f.Collection("app.bsky.feed.post") || !f.Service(Resolution{Outcome: NoPDS}) || f.HasServiceRules() || f.HasCollectionRules() {
		t.Error("nil filter dropped something")
	}
}

func BenchmarkCollection(b *testing.B) {
	f, _ := New(Config{WatchedCollections: []string{"app.bsky.*", "chat.bsky.*", "com.example.thing"}})
	for b.Loop() {
		f.Collection("app.bsky.feed.post")
		f.Collection("com.whtwnd.blog.entry")
	}
}
