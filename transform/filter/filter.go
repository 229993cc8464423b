// Package filter decides which events atkafka produces, from the event's collection and from the host of the
// account's PDS. It does no I/O: the PDS comes from the caller as a Resolution (transform/enrich produces one),
// so collection filtering stays free and service filtering costs only what the caller already paid to resolve.
//
// The package only decides. Counting dropped events (transform.Observer's Filtered) is the caller's job, because only
// the caller knows the unit: one relay commit dropped by service is several records not produced. Use the
// Reason constants as label values so they cannot drift.
package filter

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Label values for metrics.FilteredEvents, one per kind of rule.
const (
	ReasonCollection = "collection"
	ReasonService    = "service"
)

// Config holds the four pattern lists, already split on commas by the caller. For each kind (collections,
// services) at most one of the watched and ignored lists may be non-empty: a watched list keeps only what
// matches, an ignored list drops what matches.
type Config struct {
	// WatchedCollections keeps only events whose collection matches one of these patterns. A pattern is an
	// exact NSID ("app.bsky.feed.post"), which matches only itself, or a prefix ending in ".*" ("app.bsky.*"),
	// which matches the prefix itself and every NSID under it on segment boundaries.
	WatchedCollections []string
	// IgnoredCollections drops events whose collection matches one of these patterns (same syntax as above).
	IgnoredCollections []string
	// WatchedServices keeps only events of accounts whose PDS host matches one of these patterns. A pattern is
	// a hostname ("blacksky.app", matching that host and every host under it) or "*." plus a hostname
	// ("*.bsky.network", matching every host strictly under it but not the bare name). Either form may end in
	// ":port" to match only endpoints on that port, which tells apart two local PDSes on one host; without a
	// port any port matches. Hostnames are case-insensitive. URLs ("https://host", "host/path") are rejected
	// rather than guessed at, so a typo cannot silently widen or narrow the filter.
	WatchedServices []string
	// IgnoredServices drops events of accounts whose PDS host matches one of these patterns (same syntax).
	IgnoredServices []string
}

// Filter is an immutable compiled Config, safe for concurrent use. A nil *Filter keeps everything, so callers
// can hold one unconditionally.
type Filter struct {
	collections *collectionSet
	watchColl   bool // collections is a watched (keep-only) list, else an ignored list
	services    []servicePattern
	watchSvc    bool
}

// New compiles cfg. Every error names the offending entry and the setting it came from, since it is shown to
// whoever wrote the configuration.
func New(cfg Config) (*Filter, error) {
	f := &Filter{}
	var errs []error
	switch {
	case len(cfg.WatchedCollections) > 0 && len(cfg.IgnoredCollections) > 0:
		errs = append(errs, errors.New("watched and ignored collections are both set: give one or the other"))
	case len(cfg.WatchedCollections) > 0:
		f.watchColl = true
		f.collections, errs = compileCollections("watched collections", cfg.WatchedCollections, errs)
	case len(cfg.IgnoredCollections) > 0:
		f.collections, errs = compileCollections("ignored collections", cfg.IgnoredCollections, errs)
	}
	switch {
	case len(cfg.WatchedServices) > 0 && len(cfg.IgnoredServices) > 0:
		errs = append(errs, errors.New("watched and ignored services are both set: give one or the other"))
	case len(cfg.WatchedServices) > 0:
		f.watchSvc = true
		f.services, errs = compileServices("watched services", cfg.WatchedServices, errs)
	case len(cfg.IgnoredServices) > 0:
		f.services, errs = compileServices("ignored services", cfg.IgnoredServices, errs)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

// HasCollectionRules reports whether Collection can ever return false, so callers can skip the check (and
// any decoding it would need) entirely.
func (f *Filter) HasCollectionRules() bool { return f != nil && f.collections != nil }

// HasServiceRules reports whether Service can ever return false. When it is false the caller need not
// resolve the account's PDS at all.
func (f *Filter) HasServiceRules() bool { return f != nil && len(f.services) > 0 }

// Collection reports whether an event in collection nsid is kept. It needs no network, so callers should
// apply it before decoding records.
func (f *Filter) Collection(nsid string) bool {
	if !f.HasCollectionRules() {
		return true
	}
	return f.collections.match(nsid) == f.watchColl
}

// Service reports whether an event of an account whose PDS resolved to r is kept. An account that definitively
// has no PDS matches no pattern: it is dropped under watched services and kept under ignored services. An
// Unknown resolution (a transient failure) is kept under both, so an outage of the PLC never loses a watched
// account's events; the caller may want to count those.
func (f *Filter) Service(r Resolution) bool {
	if !f.HasServiceRules() {
		return true
	}
	switch r.Outcome {
	case Resolved:
		for _, p := range f.services {
			if p.match(r.Host, r.Port) {
				return f.watchSvc
			}
		}
		return !f.watchSvc
	case NoPDS:
		return !f.watchSvc
	default:
		return true
	}
}

// Outcome says how far resolving an account's PDS got. The zero value is Unknown, so a Resolution nobody
// filled in fails open.
type Outcome uint8

const (
	// Unknown: the lookup failed transiently (timeout, 5xx, PLC unreachable); nothing is known.
	Unknown Outcome = iota
	// NoPDS: the account definitively has no PDS (the DID is unknown to the PLC, or its document names no
	// usable #atproto_pds endpoint).
	NoPDS
	// Resolved: Host and Port hold the PDS endpoint.
	Resolved
)

// String returns a name fit for logs.
func (o Outcome) String() string {
	switch o {
	case NoPDS:
		return "no_pds"
	case Resolved:
		return "resolved"
	default:
		return "unknown"
	}
}

// Resolution is the outcome of resolving an account's PDS. It lives here, not in transform/enrich, because the
// filter is what gives it meaning; enrich imports filter to return it, and filter stays free of I/O and of
// enrich's dependencies.
type Resolution struct {
	Outcome Outcome
	// Host is the PDS endpoint's hostname, lowercased, without port or brackets; set when Outcome is Resolved.
	Host string
	// Port is the endpoint's effective port (443 for https and 80 for http when the URL names none).
	Port int
}

// ResolvedEndpoint turns a #atproto_pds service endpoint URL as found in a DID document into a Resolution.
// Anything that is not an absolute http(s) URL with a host is NoPDS: the document names no usable PDS, and
// retrying will not change that.
func ResolvedEndpoint(endpoint string) Resolution {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return Resolution{Outcome: NoPDS}
	}
	var port int
	switch strings.ToLower(u.Scheme) {
	case "https":
		port = 443
	case "http":
		port = 80
	default:
		return Resolution{Outcome: NoPDS}
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return Resolution{Outcome: NoPDS}
		}
		port = n
	}
	return Resolution{Outcome: Resolved, Host: strings.TrimSuffix(strings.ToLower(u.Hostname()), "."), Port: port}
}

// Pattern is one compiled collection pattern, for callers that must know which of several patterns matches an
// NSID (routes, where the first match wins) rather than whether any does.
type Pattern struct{ set *collectionSet }

// ParsePattern compiles one collection pattern in the syntax of Config's collection lists: an NSID, or a prefix
// ending in ".*".
func ParsePattern(p string) (Pattern, error) {
	s := &collectionSet{exact: map[string]bool{}, prefixes: map[string]bool{}}
	if err := addCollection(s, p); err != nil {
		return Pattern{}, err
	}
	return Pattern{s}, nil
}

// Match reports whether nsid matches the pattern.
func (p Pattern) Match(nsid string) bool { return p.set.match(nsid) }

// collectionSet matches an NSID against exact names and prefixes with map lookups at each '.' of the NSID, so
// its cost does not grow with the number of patterns.
type collectionSet struct {
	exact    map[string]bool
	prefixes map[string]bool // "app.bsky" for the pattern "app.bsky.*"
}

func (s *collectionSet) match(nsid string) bool {
	if s.exact[nsid] || s.prefixes[nsid] {
		return true
	}
	if len(s.prefixes) == 0 {
		return false
	}
	for i := 0; i < len(nsid); i++ {
		if nsid[i] == '.' && s.prefixes[nsid[:i]] {
			return true
		}
	}
	return false
}

func compileCollections(setting string, patterns []string, errs []error) (*collectionSet, []error) {
	s := &collectionSet{exact: map[string]bool{}, prefixes: map[string]bool{}}
	for i, p := range patterns {
		if err := addCollection(s, p); err != nil {
			errs = append(errs, fmt.Errorf("%s: entry %d %q: %w", setting, i+1, p, err))
		}
	}
	return s, errs
}

func addCollection(s *collectionSet, p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty entry (stray comma?)")
	}
	if p != strings.TrimSpace(p) {
		return errors.New("surrounding whitespace")
	}
	if prefix, ok := strings.CutSuffix(p, ".*"); ok {
		if prefix == "" || strings.Contains(prefix, "*") {
			return errors.New(`"*" is only allowed as the whole last segment, after at least one segment (like "app.bsky.*")`)
		}
		for seg := range strings.SplitSeq(prefix, ".") {
			if err := checkNSIDSegment(seg); err != nil {
				return err
			}
		}
		s.prefixes[prefix] = true
		return nil
	}
	if strings.Contains(p, "*") {
		return errors.New(`"*" is only allowed as the whole last segment (like "app.bsky.*")`)
	}
	if _, err := syntax.ParseNSID(p); err != nil {
		return fmt.Errorf("not a valid NSID: %w", err)
	}
	s.exact[p] = true
	return nil
}

// checkNSIDSegment validates one segment of a prefix pattern. A prefix may stop after any segment of an NSID
// ("app.bsky" has fewer segments than syntax.ParseNSID accepts), so segments are checked on their own, by the
// rules NSID authority segments follow: ASCII letters, digits and hyphens, 1-63 long, no leading or trailing
// hyphen.
func checkNSIDSegment(seg string) error {
	if seg == "" {
		return errors.New("empty segment")
	}
	if len(seg) > 63 {
		return fmt.Errorf("segment %q is longer than 63 characters", seg)
	}
	if seg[0] == '-' || seg[len(seg)-1] == '-' {
		return fmt.Errorf("segment %q starts or ends with a hyphen", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("segment %q has character %q (want letters, digits, hyphens)", seg, c)
		}
	}
	return nil
}

// servicePattern is one compiled service pattern.
type servicePattern struct {
	host     string // lowercased, without "*."
	wildcard bool   // "*.host": strictly under host
	ip       bool   // an IP address has no subdomains: exact match only
	port     int    // 0: any port
}

func (p servicePattern) match(host string, port int) bool {
	if p.port != 0 && p.port != port {
		return false
	}
	if host == p.host {
		return !p.wildcard
	}
	if p.ip {
		return false
	}
	// Suffix on a label boundary: "x.bsky.network" is under "bsky.network", "evilbsky.network" is not. An IP
	// address has no subdomains, so "0.1" must not match "127.0.0.1".
	return len(host) > len(p.host) && host[len(host)-len(p.host)-1] == '.' && strings.HasSuffix(host, p.host) &&
		net.ParseIP(host) == nil
}

func compileServices(setting string, patterns []string, errs []error) ([]servicePattern, []error) {
	out := make([]servicePattern, 0, len(patterns))
	for i, raw := range patterns {
		p, err := parseService(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: entry %d %q: %w", setting, i+1, raw, err))
			continue
		}
		out = append(out, p)
	}
	return out, errs
}

func parseService(raw string) (servicePattern, error) {
	var p servicePattern
	switch {
	case strings.TrimSpace(raw) == "":
		return p, errors.New("empty entry (stray comma?)")
	case raw != strings.TrimSpace(raw):
		return p, errors.New("surrounding whitespace")
	case strings.Contains(raw, "://"):
		return p, errors.New(`want a hostname like "blacksky.app" or "*.bsky.network", not a URL: drop the scheme`)
	case strings.ContainsAny(raw, "/?#@"):
		return p, errors.New(`want a hostname like "blacksky.app" or "*.bsky.network": no path, query or user`)
	}
	s := strings.ToLower(raw)
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		p.wildcard = true
		s = rest
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	} else if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, port, err := net.SplitHostPort(s)
		if err != nil {
			return p, fmt.Errorf("bad host:port: %w", err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			return p, fmt.Errorf("bad port %q", port)
		}
		s, p.port = h, n
	}
	s = strings.TrimSuffix(s, ".")
	if strings.Contains(s, "*") {
		return p, errors.New(`"*" is only allowed as a leading "*." (like "*.bsky.network")`)
	}
	if ip := net.ParseIP(s); ip != nil {
		if p.wildcard {
			return p, errors.New(`"*." cannot prefix an IP address`)
		}
		p.host, p.ip = ip.String(), true
		return p, nil
	}
	if len(s) > 253 {
		return p, errors.New("hostname longer than 253 characters")
	}
	for label := range strings.SplitSeq(s, ".") {
		if err := checkHostLabel(label); err != nil {
			return p, err
		}
	}
	p.host = s
	return p, nil
}

// checkHostLabel applies the DNS label rules. Underscores are let through because some operators' internal
// names use them and rejecting a name that appears in real DID documents would only confuse.
func checkHostLabel(label string) error {
	if label == "" {
		return errors.New("empty label in hostname")
	}
	if len(label) > 63 {
		return fmt.Errorf("label %q is longer than 63 characters", label)
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("label %q has character %q", label, c)
		}
	}
	return nil
}
