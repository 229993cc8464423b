package labels

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/source/stream"
	"github.com/atkafka/atkafka/transform/frame"
)

// VerifyMode is what --verify-labels does with each label's signature.
type VerifyMode uint8

// The verification modes.
const (
	// VerifyOff checks nothing.
	VerifyOff VerifyMode = iota
	// VerifyLog checks, counts and logs failures, and produces every label anyway.
	VerifyLog
	// VerifyStrict dead-letters the labels that fail, with the reason.
	VerifyStrict
)

// VerifyModes are the accepted --verify-labels values, in VerifyMode order.
var VerifyModes = []string{"off", "log", "strict"}

// ParseVerifyMode reads a --verify-labels value.
func ParseVerifyMode(s string) (VerifyMode, error) {
	for i, m := range VerifyModes {
		if s == m {
			return VerifyMode(i), nil
		}
	}
	return 0, fmt.Errorf("--verify-labels %q is not one of off, log, strict", s)
}

// keyTimeout bounds one key lookup: the labeler's stream waits meanwhile.
const keyTimeout = 10 * time.Second

// rejection is why a label failed verification; kind is a bounded metric label and dead-letter reason.
type rejection struct {
	kind string
	err  error
}

// verify checks l's signature against its src's #atproto_label key. A failure fetches the key again once (the
// labeler may have rotated it) before it counts.
func (lb *labeler) verify(ctx context.Context, l *frame.Label) *rejection {
	r := lb.check(ctx, l)
	lb.s.cfg.Observer.Verified(lb.name, resultOf(r))
	return r
}

func resultOf(r *rejection) string {
	if r == nil {
		return "ok"
	}
	return r.kind
}

func (lb *labeler) check(ctx context.Context, l *frame.Label) *rejection {
	if len(l.Sig) == 0 {
		return &rejection{"unsigned", errors.New("the label carries no signature")}
	}
	unsigned := l.Unsigned(nil)
	var err error
	for _, refresh := range []bool{false, true} {
		key, kerr := lb.labelKey(ctx, string(l.Src), refresh)
		if kerr != nil {
			return &rejection{"key_unavailable", kerr}
		}
		if err = key.HashAndVerify(unsigned, l.Sig); err == nil {
			return nil
		}
	}
	return &rejection{"failed", fmt.Errorf("signature does not verify with the #atproto_label key of %s: %w", l.Src, err)}
}

// labelKey returns src's label key. In strict mode a transient failure (the PLC unreachable) is retried with
// backoff until the directory answers or ctx ends, holding up this labeler: dead-lettering its labels meanwhile
// would take them out of the stream for a cause that is not theirs.
func (lb *labeler) labelKey(ctx context.Context, src string, refresh bool) (atcrypto.PublicKey, error) {
	policy := backoff.New(stream.ReconnectBase, stream.ReconnectMax)
	for {
		kctx, cancel := context.WithTimeout(ctx, keyTimeout)
		key, err := lb.s.cfg.Directory.LabelKey(kctx, src, refresh)
		cancel()
		if err == nil || lb.s.cfg.Verify != VerifyStrict || definitive(err) || ctx.Err() != nil {
			return key, err
		}
		delay := policy.Next()
		if policy.Attempt() == 1 {
			lb.log.Warn("label key unavailable; the labeler waits for it (--verify-labels strict)", "src", src, "err", err,
				"retry_in", delay.Round(time.Millisecond))
		}
		backoff.Sleep(ctx, delay)
	}
}

// definitive reports whether a key lookup failed for good: no such DID, or no label key in its document.
func definitive(err error) bool {
	return errors.Is(err, identity.ErrDIDNotFound) || errors.Is(err, identity.ErrKeyNotDeclared) || errors.Is(err, errBadDID)
}
