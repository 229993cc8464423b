// Package route sends each operation to a topic chosen by its collection (--route PATTERN=TOPIC), so that a
// consumer that wants only posts reads no likes. It is a sink.Sink decorator in front of the Kafka sink: sources
// and transforms stay unaware of it, and keys, per-DID order, acknowledgements and transactions work as for one
// topic, since every record still travels in its source message, keyed by its DID.
//
// Account, identity and sync events go to every topic by default, so that each topic is complete on its own: a
// consumer of the posts topic still sees the account deletion that must remove them.
package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/atkafka/atkafka/sink"
	"github.com/atkafka/atkafka/transform/filter"
)

// Route sends operations on the collections Pattern matches to Topic.
type Route struct {
	Pattern string // in the filters' syntax: an NSID, or a prefix ending in ".*"
	Topic   string
}

// Parse reads a route written as PATTERN=TOPIC.
func Parse(s string) (Route, error) {
	pattern, topic, ok := strings.Cut(s, "=")
	if !ok || pattern == "" || topic == "" {
		return Route{}, fmt.Errorf("route %q is not PATTERN=TOPIC", s)
	}
	return Route{Pattern: pattern, Topic: topic}, nil
}

// Config configures a Sink.
type Config struct {
	// Routes are tried in order; the first whose pattern matches an operation's collection chooses its topic.
	Routes []Route
	// Topic is the main topic (--output-topic): operations no route matches go there, and so does every record
	// that belongs to no DID (#info).
	Topic string
	// AccountEventsMainOnly keeps account, identity and sync events in Topic only, instead of every topic.
	AccountEventsMainOnly bool
}

// Sink rewrites the topic of each record of a message and hands the message on. It is safe for concurrent use.
type Sink struct {
	next     sink.Sink
	main     string
	patterns []filter.Pattern
	topics   []string // topics[i] is the topic of patterns[i]
	// fanOut is every topic an account, identity or sync event goes to: the main topic, then each routed one once.
	fanOut []string
}

var _ sink.Sink = (*Sink)(nil)

// headerCollection is the header relay and Tap both set on every operation: with the key, all the router reads.
const headerCollection = "collection"

// didPrefix starts the key of every record that belongs to a DID; #info records are keyed "<unknown>".
var didPrefix = []byte("did:")

// New returns a Sink writing to next, or cfg's errors (see Config.Validate).
func New(next sink.Sink, cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{next: next, main: cfg.Topic, fanOut: []string{cfg.Topic}}
	for _, r := range cfg.Routes {
		p, _ := filter.ParsePattern(r.Pattern) // Validate checked it
		s.patterns, s.topics = append(s.patterns, p), append(s.topics, r.Topic)
		if !cfg.AccountEventsMainOnly && !slices.Contains(s.fanOut, r.Topic) {
			s.fanOut = append(s.fanOut, r.Topic)
		}
	}
	return s, nil
}

// Validate reports every bad route at once, each named as the operator wrote it.
func (cfg Config) Validate() error {
	var errs []error
	if cfg.Topic == "" {
		errs = append(errs, errors.New("route: no main topic"))
	}
	for i, r := range cfg.Routes {
		if _, err := filter.ParsePattern(r.Pattern); err != nil {
			errs = append(errs, fmt.Errorf("--route %d %q: %w", i+1, r.Pattern+"="+r.Topic, err))
		}
		if r.Topic == "" {
			errs = append(errs, fmt.Errorf("--route %d %q: no topic", i+1, r.Pattern))
		}
	}
	return errors.Join(errs...)
}

// Topics lists the topics the routes name besides the main topic, once each, for the Kafka sink to create at
// start-up.
func (cfg Config) Topics() []string {
	var out []string
	for _, r := range cfg.Routes {
		if r.Topic != cfg.Topic && !slices.Contains(out, r.Topic) {
			out = append(out, r.Topic)
		}
	}
	return out
}

// Send hands next a copy of msg whose records carry their routed topics, account, identity and sync events once
// per topic. Records already addressed to another topic (dead letters) keep it. msg itself is left as it is, so a
// source that sends it again routes it again the same way.
func (s *Sink) Send(ctx context.Context, msg *sink.Message) error {
	routed := &sink.Message{Done: msg.Done, Mark: msg.Mark, Records: make([]sink.Record, 0, len(msg.Records))}
	for _, r := range msg.Records {
		if r.Topic != "" && r.Topic != s.main {
			routed.Records = append(routed.Records, r)
			continue
		}
		if c := collection(r); c != "" {
			r.Topic = s.topic(c)
			routed.Records = append(routed.Records, r)
			continue
		}
		fanOut := s.fanOut[:1] // #info: the main topic
		if bytes.HasPrefix(r.Key, didPrefix) {
			fanOut = s.fanOut
		}
		for _, t := range fanOut {
			r.Topic = t
			routed.Records = append(routed.Records, r)
		}
	}
	return s.next.Send(ctx, routed)
}

// Unwrap returns the sink s hands the messages to, so that sink.CommitsCursor sees through s: it keeps their
// order and Marks.
func (s *Sink) Unwrap() sink.Sink { return s.next }

// topic is the topic of the first route matching collection, else the main topic.
func (s *Sink) topic(collection string) string {
	for i, p := range s.patterns {
		if p.Match(collection) {
			return s.topics[i]
		}
	}
	return s.main
}

// collection is the record's collection header, empty when it has none. It is a view of the header's bytes, not
// a copy: it runs once per record, the source leaves the headers alone until Done, and the view does not outlive
// the routing decision.
func collection(r sink.Record) string {
	for _, h := range r.Headers {
		if h.Key == headerCollection {
			return unsafe.String(unsafe.SliceData(h.Value), len(h.Value))
		}
	}
	return ""
}
