package tail

import (
	"strings"
	"testing"
	"time"

	"github.com/atkafka/atkafka/transform/format"
)

// The standard values come from transform/format, so the summaries follow what atkafka really writes.
var (
	live, notLive = true, false
	ts            = "2024-01-01T12:00:00.000Z"
	post          = format.Event{DID: "did:plc:alice", Timestamp: ts, Operation: &format.Operation{
		Action: "create", Collection: "app.bsky.feed.post", Rkey: "3k2a", CID: "bafyrei",
		Record: []byte(`{"$type":"app.bsky.feed.post","text":"Hello\n\n  world","createdAt":"2024-01-01T12:00:00Z"}`),
	}}
	like = format.Event{DID: "did:plc:bob", Timestamp: ts, Live: &notLive, Operation: &format.Operation{
		Action: "create", Collection: "app.bsky.feed.like", Rkey: "3k2b", CID: "bafyrei",
		Record: []byte(`{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:alice/app.bsky.feed.post/3k2a","cid":"bafyrei"}}`),
	}}
	follow = format.Event{DID: "did:plc:bob", Timestamp: ts, Live: &live, Operation: &format.Operation{
		Action: "create", Collection: "app.bsky.graph.follow", Rkey: "3k2c", CID: "bafyrei",
		Record: []byte(`{"$type":"app.bsky.graph.follow","subject":"did:plc:alice"}`),
	}}
	deletion = format.Event{DID: "did:plc:alice", Timestamp: ts, Operation: &format.Operation{
		Action: "delete", Collection: "app.bsky.feed.post", Rkey: "3k2a",
	}}
	profile = format.Event{DID: "did:plc:alice", Timestamp: ts, Operation: &format.Operation{
		Action: "update", Collection: "app.bsky.actor.profile", Rkey: "self", CID: "bafyrei",
		Record: []byte(`{"$type":"app.bsky.actor.profile","displayName":"Alice"}`),
	}}
	handle   = format.Event{DID: "did:plc:alice", Timestamp: ts, Identity: &format.Identity{Seq: 7, Handle: "alice.test"}}
	tapIdent = format.Event{DID: "did:plc:alice", Timestamp: ts, Identity: &format.Identity{Handle: "alice.test", IsActive: &notLive, Status: "takendown"}}
	takedown = format.Event{DID: "did:plc:alice", Timestamp: ts, Account: &format.Account{Active: false, Seq: 8, Status: "takendown"}}
	message  = "Requested cursor exceeded limit. Possibly missing events"
	outdated = format.Event{Info: &format.Info{Name: "OutdatedCursor", Message: &message}}
	resync   = format.Event{DID: "did:plc:alice", Timestamp: ts, Sync: &format.Sync{Seq: 9, Rev: "3k2d", Commit: "bafyreic"}}
)

const ozoneTakedown = `{"id":42,"event":{"$type":"tools.ozone.moderation.defs#modEventTakedown","comment":"spam\nring","durationInHours":24},"subject":{"$type":"com.atproto.repo.strongRef","uri":"at://did:plc:alice/app.bsky.feed.post/3k2a","cid":"bafyrei"},"subjectBlobCids":[],"createdBy":"did:plc:mod","createdAt":"2024-01-01T12:00:05.000Z","creatorHandle":"mod.test"}`

const ozoneLabel = `{"id":43,"event":{"$type":"tools.ozone.moderation.defs#modEventLabel","createLabelVals":["spam","rude"],"negateLabelVals":["ok"]},"subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:bob"},"createdBy":"did:plc:mod","createdAt":"2024-01-01T12:00:06.000Z"}`

const ozoneReport = `{"id":44,"event":{"$type":"tools.ozone.moderation.defs#modEventReport","reportType":"com.atproto.moderation.defs#reasonSpam"},"subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:bob"},"createdBy":"did:plc:carol","createdAt":"2024-01-01T12:00:07.000Z"}`

const ozoneTag = `{"id":45,"event":{"$type":"tools.ozone.moderation.defs#modEventTag","add":["a"],"remove":["b"]},"subject":{"$type":"chat.bsky.convo.defs#messageRef","did":"did:plc:bob","messageId":"m1","convoId":"c1"},"createdBy":"did:plc:mod","createdAt":"2024-01-01T12:00:08.000Z"}`

var recordTime = time.Date(2024, 1, 1, 12, 0, 9, 0, time.UTC)

func standard(ev format.Event) string { return string(ev.AppendJSON(nil)) }

func osprey(t testing.TB, ev format.Event, opts ...format.FormatterOption) string {
	ids, err := format.NewSnowflake(1)
	if err != nil {
		t.Fatal(err)
	}
	return string(format.NewFormatter(append([]format.FormatterOption{format.Osprey(ids)}, opts...)...).AppendValue(nil, &ev))
}

func TestSummaries(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"post", standard(post), ts + ` create   did:plc:alice app.bsky.feed.post/3k2a "Hello world"`},
		{"like", standard(like), ts + ` create   did:plc:bob app.bsky.feed.like/3k2b → at://did:plc:alice/app.bsky.feed.post/3k2a (backfill)`},
		{"follow", standard(follow), ts + ` create   did:plc:bob app.bsky.graph.follow/3k2c → did:plc:alice`},
		{"delete", standard(deletion), ts + ` delete   did:plc:alice app.bsky.feed.post/3k2a`},
		{"profile", standard(profile), ts + ` update   did:plc:alice app.bsky.actor.profile/self "Alice"`},
		{"identity", standard(handle), ts + ` identity did:plc:alice handle=alice.test`},
		{"tap identity", standard(tapIdent), ts + ` identity did:plc:alice handle=alice.test active=false status=takendown`},
		{"account", standard(takedown), ts + ` account  did:plc:alice active=false status=takendown`},
		{"info", standard(outdated), `2024-01-01T12:00:09.000Z info     OutdatedCursor "` + message + `"`},
		{"sync", standard(resync), ts + ` sync     did:plc:alice rev=3k2d commit=bafyreic`},
		{"osprey post", osprey(t, post), ts + ` create   did:plc:alice app.bsky.feed.post/3k2a "Hello world"`},
		{"osprey account", osprey(t, takedown), ts + ` account  did:plc:alice active=false status=takendown`},
		{"coordinator post", osprey(t, post, format.Coordinator()), ts + ` create   did:plc:alice app.bsky.feed.post/3k2a "Hello world"`},
		{"ozone takedown", ozoneTakedown, `2024-01-01T12:00:05.000Z ozone#takedown did:plc:alice app.bsky.feed.post/3k2a id=42 by=mod.test hours=24 "spam ring"`},
		{"ozone label", ozoneLabel, `2024-01-01T12:00:06.000Z ozone#label did:plc:bob id=43 by=did:plc:mod labels=+spam,+rude,-ok`},
		{"ozone report", ozoneReport, `2024-01-01T12:00:07.000Z ozone#report did:plc:bob id=44 by=did:plc:carol reason=reasonSpam`},
		{"ozone tag", ozoneTag, `2024-01-01T12:00:08.000Z ozone#tag did:plc:bob message=m1 id=45 by=did:plc:mod tags=+a,-b`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := summarize([]byte(tc.value))
			if !ok {
				t.Fatalf("not recognised: %s", tc.value)
			}
			if got := string(l.appendTo(nil, recordTime)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestUnrecognisedValues(t *testing.T) {
	for _, v := range []string{``, `not json`, `[1,2]`, `{"dead":"letter"}`, `{"data":{"action_name":"x","data":"oops"}}`,
		"\xa2{}", "\xa3{}", "\xd9\x02{}"} {
		if _, ok := summarize([]byte(v)); ok {
			t.Errorf("summarize(%q) recognised", v)
		}
	}
}

func TestQuoteCutsLongText(t *testing.T) {
	got := quote(strings.Repeat("é", 150))
	if want := `"` + strings.Repeat("é", maxText) + `…"`; got != want {
		t.Fatalf("quote = %s", got)
	}
}
